"""Paper venue: hand-computed book walks, fees, balances, every rejection, latency, staleness."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from arb_common.clock import ManualClock
from arb_common.messages import Book
from arb_executor.paper import BookCache, PaperVenue
from arb_executor.venue_client import DuplicateOrder, MarketRules, OrderRejected

RULES = MarketRules("BTC-USDT", D("0.001"), D("0.001"), D("10"), "BTC", "USDT")


def book(asks: list[tuple[str, str]], bids: list[tuple[str, str]] | None = None,
         seq: int = 1) -> Book:
    return Book(venue="alpha", symbol="BTC-USDT", seq=seq,
                asks=[(D(p), D(q)) for p, q in asks],
                bids=[(D(p), D(q)) for p, q in (bids or [])])


def venue(b: Book | None, *, balances: dict[str, str] | None = None,
          clock: ManualClock | None = None, **kw: object) -> PaperVenue:
    clock = clock or ManualClock()
    cache = BookCache(clock)
    if b is not None:
        cache.update(b)
    return PaperVenue("alpha", cache, rules={"BTC-USDT": RULES}, clock=clock,
                      balances=balances or {"USDT": "1000", "BTC": "0"}, **kw)  # type: ignore[arg-type]


async def test_buy_walks_three_levels_exact_vwap_fees_and_balances() -> None:
    v = venue(book([("100", "1"), ("101", "1"), ("102.5", "2")]))
    o = await v.submit("BTC-USDT", "buy", D("2.5"), "b1")
    assert o.status == "FILLED" and o.filled == D("2.5") and o.quantity == D("2.5")
    assert [(f.price, f.quantity, f.fee) for f in o.fills] == [
        (D("100"), D("1"), D("0.1")), (D("101"), D("1"), D("0.101")),
        (D("102.5"), D("0.5"), D("0.05125"))]
    assert o.avg_price == D("100.9")  # 252.25 / 2.5
    assert {f.fee_asset for f in o.fills} == {"USDT"}
    assert [f.trade_id for f in o.fills] == ["paper-b1-1", "paper-b1-2", "paper-b1-3"]
    assert o.venue_order_id == "paper-b1"
    # 1000 - 252.25 cost - 0.25225 fees
    assert v.balances() == {"USDT": D("747.49775"), "BTC": D("2.5")}
    assert await v.available("USDT") == D("747.49775")
    assert await v.available("ETH") == D("0")


async def test_sell_walks_bids_and_credits_proceeds_minus_fee() -> None:
    v = venue(book([], [("99", "0.7"), ("98.5", "1")]), balances={"USDT": "0", "BTC": "2"})
    o = await v.submit("BTC-USDT", "sell", D("1.2"), "s1")
    assert o.status == "FILLED"
    assert [(f.price, f.quantity, f.fee) for f in o.fills] == [
        (D("99"), D("0.7"), D("0.0693")), (D("98.5"), D("0.5"), D("0.04925"))]
    assert o.avg_price == D("118.55") / D("1.2")
    assert v.balances() == {"USDT": D("118.55") - D("0.11855"), "BTC": D("0.8")}


async def test_short_depth_fills_what_is_there_and_expires() -> None:
    v = venue(book([("100", "1"), ("101", "0.5")]))
    o = await v.submit("BTC-USDT", "buy", D("3"), "p1")
    assert (o.status, o.quantity, o.filled) == ("EXPIRED", D("3"), D("1.5"))
    assert o.avg_price == D("150.5") / D("1.5")
    assert v.balances() == {"USDT": D("1000") - D("150.5") - D("0.1505"), "BTC": D("1.5")}
    assert await v.query("BTC-USDT", "p1") == o


async def test_min_notional_exactly_met_is_accepted_below_is_rejected() -> None:
    v = venue(book([("100", "1")]))
    assert (await v.submit("BTC-USDT", "buy", D("0.1"), "n1")).status == "FILLED"  # 10 == 10
    with pytest.raises(OrderRejected, match=r"^Filter failure: NOTIONAL"):
        await v.submit("BTC-USDT", "buy", D("0.099"), "n2")


@pytest.mark.parametrize("qty", ["0.0005", "1.0005", "0"])
async def test_lot_size_below_min_or_off_the_step_grid_is_rejected(qty: str) -> None:
    v = venue(book([("100", "5")]))
    with pytest.raises(OrderRejected, match=r"^Filter failure: LOT_SIZE"):
        await v.submit("BTC-USDT", "buy", D(qty), "l1")
    assert v.orders == {} and v.balances()["USDT"] == D("1000")


async def test_buy_beyond_the_quote_balance_is_rejected_and_changes_nothing() -> None:
    v = venue(book([("100", "5")]), balances={"USDT": "200", "BTC": "0"})
    with pytest.raises(OrderRejected,
                       match=r"^Account has insufficient balance for requested action\."):
        await v.submit("BTC-USDT", "buy", D("2"), "f1")  # 200 + 0.2 fee > 200
    assert v.balances() == {"USDT": D("200"), "BTC": D("0")}
    assert await v.query("BTC-USDT", "f1") is None
    o = await v.submit("BTC-USDT", "buy", D("1.998"), "f1")  # 199.8 + 0.1998 <= 200
    assert o.status == "FILLED" and v.balances()["USDT"] == D("0.0002")


async def test_sell_beyond_the_base_balance_is_rejected() -> None:
    v = venue(book([], [("100", "5")]), balances={"USDT": "0", "BTC": "0.5"})
    with pytest.raises(OrderRejected, match="insufficient balance"):
        await v.submit("BTC-USDT", "sell", D("0.6"), "f2")
    assert (await v.submit("BTC-USDT", "sell", D("0.5"), "f3")).status == "FILLED"
    assert v.balances() == {"USDT": D("49.95"), "BTC": D("0")}


async def test_unknown_symbol_is_rejected_like_the_venue() -> None:
    v = venue(book([("100", "5")]))
    with pytest.raises(OrderRejected, match=r"^Invalid symbol\."):
        v.rules("DOGE-USDT")
    with pytest.raises(OrderRejected, match=r"^Invalid symbol\."):
        await v.submit("DOGE-USDT", "buy", D("1"), "u1")


async def test_listed_symbols_without_exchange_info_use_the_default_rules() -> None:
    v = PaperVenue("alpha", BookCache(), symbols=["ETH-USDT"],
                   default_rules=("0.0001", "0.0001", "5"))
    r = v.rules("ETH-USDT")
    assert (r.lot_step, r.min_qty, r.min_notional, r.base, r.quote) == (
        D("0.0001"), D("0.0001"), D("5"), "ETH", "USDT")
    with pytest.raises(OrderRejected, match="Invalid symbol"):
        v.rules("BTC-USDT")


async def test_a_used_client_order_id_is_refused_as_duplicate() -> None:
    v = venue(book([("100", "5")]))
    first = await v.submit("BTC-USDT", "buy", D("1"), "d1")
    with pytest.raises(DuplicateOrder, match=r"^Duplicate order sent\.$"):
        await v.submit("BTC-USDT", "buy", D("1"), "d1")
    assert await v.query("BTC-USDT", "d1") == first
    assert await v.query("ETH-USDT", "d1") is None  # the venue looks it up per symbol
    assert v.balances()["BTC"] == D("1")


async def test_no_book_empty_side_and_stale_book_are_rejected() -> None:
    clock = ManualClock()
    with pytest.raises(OrderRejected, match="no book for BTC-USDT on alpha"):
        await venue(None).submit("BTC-USDT", "buy", D("1"), "x1")
    with pytest.raises(OrderRejected, match="no liquidity"):
        await venue(book([], [("99", "1")])).submit("BTC-USDT", "buy", D("1"), "x2")
    v = venue(book([("100", "5")]), clock=clock, book_stale_s=5.0)
    clock.advance(5.0)
    assert (await v.submit("BTC-USDT", "buy", D("1"), "x3")).status == "FILLED"  # 5 s: fresh
    clock.advance(0.5)
    with pytest.raises(OrderRejected, match=r"no book .*5\.5 s old, limit 5 s"):
        await v.submit("BTC-USDT", "buy", D("1"), "x4")
    v.books.update(book([("101", "5")], seq=2))
    assert (await v.submit("BTC-USDT", "buy", D("1"), "x4")).avg_price == D("101")


async def test_book_age_counts_from_market_data_receive_time_when_given() -> None:
    clock = ManualClock()
    cache = BookCache(clock)
    cache.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, asks=[], bids=[],
                      recv_ts=clock.now_ns() - 7_000_000_000))
    assert cache.age_s("alpha", "BTC-USDT") == pytest.approx(7.0)


async def test_latency_fills_against_the_book_as_it_is_after_the_round_trip() -> None:
    clock = ManualClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the market moves while the order travels
        slept.append(seconds)
        clock.advance(seconds)
        v.books.update(book([("105", "0.4"), ("106", "5")], seq=2))

    v = venue(book([("100", "5")]), clock=clock, latency_ms=250, sleep=sleep)
    t0 = clock.now_ms()
    o = await v.submit("BTC-USDT", "buy", D("1"), "t1")
    assert slept == [0.25]
    assert [(f.price, f.quantity) for f in o.fills] == [(D("105"), D("0.4")), (D("106"), D("0.6"))]
    assert o.avg_price == D("105.6")
    assert o.ts_ms == t0 + 250 and {f.ts_ms for f in o.fills} == {t0 + 250}


async def test_real_latency_sleeps_and_sees_a_book_update_that_arrives_meanwhile() -> None:
    cache = BookCache()
    cache.update(book([("100", "5")]))
    v = PaperVenue("alpha", cache, rules={"BTC-USDT": RULES}, latency_ms=60)

    async def move() -> None:
        await asyncio.sleep(0.02)
        cache.update(book([("103", "5")], seq=2))

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    order, _ = await asyncio.gather(v.submit("BTC-USDT", "buy", D("1"), "t2"), move())
    assert loop.time() - t0 >= 0.055
    assert order.avg_price == D("103")


async def test_concurrent_orders_cannot_spend_the_same_balance_or_reuse_a_coid() -> None:
    v = venue(book([("100", "10")]), balances={"USDT": "150", "BTC": "0"}, latency_ms=20)
    results = await asyncio.gather(
        v.submit("BTC-USDT", "buy", D("1"), "c1"),
        v.submit("BTC-USDT", "buy", D("1"), "c1"),
        v.submit("BTC-USDT", "buy", D("1"), "c2"),
        return_exceptions=True)
    assert results[0].status == "FILLED"  # type: ignore[union-attr]
    assert isinstance(results[1], DuplicateOrder) and str(results[1]) == "Duplicate order sent."
    assert isinstance(results[2], OrderRejected) and "insufficient balance" in results[2].reason
    assert v.balances() == {"USDT": D("49.9"), "BTC": D("1")}


async def test_shadow_mode_venue_fills_the_same_way_and_takes_outside_balances() -> None:
    v = venue(book([("100", "5")]), mode="shadow")
    v.set_balances({"USDT": D("500"), "BTC": D("0.1")})
    o = await v.submit("BTC-USDT", "buy", D("1"), "sh1")
    assert v.mode == "shadow" and o.status == "FILLED"
    assert v.balances() == {"USDT": D("399.9"), "BTC": D("1.1")}

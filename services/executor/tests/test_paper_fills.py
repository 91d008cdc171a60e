"""Paper fill model: hand-computed book walks."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from arb_common.messages import Book
from arb_executor.paper import BookCache, PaperVenue, fill_market_order
from arb_executor.venue_client import DuplicateOrder, MarketRules, OrderRejected

RULES = MarketRules("BTC-USDT", D("0.001"), D("0.001"), D("10"), "BTC", "USDT")


def book(asks: list[tuple[str, str]], bids: list[tuple[str, str]] | None = None) -> Book:
    return Book(venue="alpha", symbol="BTC-USDT", seq=1,
                asks=[(D(p), D(q)) for p, q in asks],
                bids=[(D(p), D(q)) for p, q in (bids or [])])


def test_buy_walks_two_ask_levels_vwap_and_fee_in_quote() -> None:
    o = fill_market_order(book([("100", "1"), ("101", "2")]), side="buy", quantity=D("2"),
                          coid="c1", rules=RULES, taker_fee=D("0.001"), ts_ms=5)
    assert o.status == "FILLED"
    assert o.filled == D("2")
    assert o.avg_price == D("100.5")
    assert sum(f.fee for f in o.fills) == D("0.201")
    assert [(f.price, f.quantity) for f in o.fills] == [(D("100"), D("1")), (D("101"), D("1"))]
    assert [f.trade_id for f in o.fills] == ["paper-c1-1", "paper-c1-2"]
    assert {f.fee_asset for f in o.fills} == {"USDT"}


def test_sell_walks_bids() -> None:
    o = fill_market_order(book([], [("99", "0.5"), ("98", "1")]), side="sell", quantity=D("1"),
                          coid="c2", rules=RULES, taker_fee=D("0.001"), ts_ms=5)
    assert o.status == "FILLED"
    assert o.avg_price == D("98.5")
    assert sum(f.fee for f in o.fills) == D("0.0985")


def test_short_depth_partially_fills_and_expires_like_binance() -> None:
    o = fill_market_order(book([("100", "1"), ("101", "0.5")]), side="buy", quantity=D("2"),
                          coid="c3", rules=RULES, taker_fee=D("0.001"), ts_ms=5)
    assert o.status == "EXPIRED"
    assert o.filled == D("1.5")
    assert o.quantity == D("2")


def test_below_min_notional_is_rejected() -> None:
    with pytest.raises(OrderRejected, match="NOTIONAL"):
        fill_market_order(book([("100", "1")]), side="buy", quantity=D("0.05"), coid="c4",
                          rules=RULES, taker_fee=D("0.001"), ts_ms=5)


def test_no_book_is_rejected() -> None:
    with pytest.raises(OrderRejected, match="no book"):
        fill_market_order(None, side="buy", quantity=D("1"), coid="c5", rules=RULES,
                          taker_fee=D("0.001"), ts_ms=5)


async def test_paper_venue_keeps_orders_by_coid_and_refuses_a_second_send() -> None:
    books = BookCache()
    books.update(book([("100", "5")]))
    venue = PaperVenue("alpha", books, rules={"BTC-USDT": RULES})
    first = await venue.submit("BTC-USDT", "buy", D("1"), "c6")
    assert await venue.query("BTC-USDT", "c6") == first
    assert await venue.query("BTC-USDT", "other") is None
    with pytest.raises(DuplicateOrder, match="Duplicate"):
        await venue.submit("BTC-USDT", "buy", D("1"), "c6")


def test_book_cache_keeps_the_newest_sequence() -> None:
    cache = BookCache()
    newer = Book(venue="alpha", symbol="BTC-USDT", seq=5, asks=[(D("1"), D("1"))], bids=[])
    older = Book(venue="alpha", symbol="BTC-USDT", seq=4, asks=[(D("2"), D("1"))], bids=[])
    cache.update(newer)
    cache.update(older)
    assert cache.get("alpha", "BTC-USDT") == newer


def test_book_cache_decodes_a_lazy_book_when_used_and_drops_a_bad_one() -> None:
    import msgspec
    from prometheus_client import REGISTRY

    from arb_common.books import decode_book
    from arb_common.messages import encode

    def wire(book: Book) -> bytes:
        return encode(book, msg_id="b", source="t", session="s", mode="paper", ts=1)

    good = Book(venue="alpha", symbol="BTC-USDT", seq=3, bids=[(D("99"), D("5"))],
                asks=[(D("101"), D("5"))], recv_ts=1)
    cache = BookCache()
    cache.update(decode_book(wire(good))[1])
    assert cache.get("alpha", "BTC-USDT") == good
    bad = wire(msgspec.structs.replace(good, seq=4)).replace(b'"101"', b'"1x1"')
    before = REGISTRY.get_sample_value("arb_executor_bad_books_total") or 0.0
    cache.update(decode_book(bad)[1])
    assert cache.get("alpha", "BTC-USDT") is None
    assert REGISTRY.get_sample_value("arb_executor_bad_books_total") == before + 1

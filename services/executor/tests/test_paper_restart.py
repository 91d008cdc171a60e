"""Paper venues rebuilt from the EXEC stream after a restart (real NATS JetStream)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from arb_common.bus import Bus
from arb_common.messages import BalanceSnapshot, Book, FillEvent, OrderEvent, Side
from arb_common.money import to_str
from arb_common.settings import Mode
from arb_common.testing import connected_bus, wait_until
from arb_executor.config import ExecutorSettings
from arb_executor.paper import BookCache, PaperVenue
from arb_executor.paper_state import (
    PaperReplay,
    build_paper_venues,
    make_paper_venues,
    publish_balances,
)
from arb_executor.venue_client import MarketRules

pytestmark = pytest.mark.integration

RULES = {v: {"BTC-USDT": MarketRules("BTC-USDT", D("0.001"), D("0.001"), D("10"), "BTC", "USDT")}
         for v in ("alpha", "beta")}
START = "USDT=1000,BTC=1,ETH=0,SOL=0"


def settings(bus_prefix: str, nats_url: str, *, session: str = "s1",
             mode: Mode = Mode.paper) -> ExecutorSettings:
    return ExecutorSettings(nats_url=nats_url, bus_prefix=bus_prefix, session=session,
                            mode=mode, venues="alpha,beta", paper_balances=START)


async def order(bus: Bus, venue: str, coid: str, side: Side, qty: str, status: str,
                filled: str = "0", avg: str | None = None) -> int:
    ev = OrderEvent(venue=venue, symbol="BTC-USDT", client_order_id=coid, side=side,
                    quantity=D(qty), filled_quantity=D(filled), status=status,  # type: ignore[arg-type]
                    venue_order_id=None if status == "NEW" else f"paper-{coid}",
                    avg_price=D(avg) if avg else None)
    ack = await bus.publish(bus.subjects.order(venue, "BTC-USDT"), ev,
                            f"order:{coid}:{status}:{to_str(D(filled))}")
    return ack.seq


async def fill(bus: Bus, venue: str, coid: str, n: int, side: Side, qty: str, price: str,
               fee: str) -> int:
    ev = FillEvent(venue=venue, symbol="BTC-USDT", client_order_id=coid,
                   venue_trade_id=f"paper-{coid}-{n}", side=side, quantity=D(qty),
                   price=D(price), fee=D(fee), fee_asset="USDT", ts=1_700_000_000_000_000_000)
    ack = await bus.publish(bus.subjects.fill(venue, "BTC-USDT"), ev, f"fill:{venue}:{n}:{coid}")
    return ack.seq


async def filled_order(bus: Bus, venue: str, coid: str, side: Side,
                       legs: list[tuple[str, str, str]]) -> None:
    """What the executor publishes for a paper order: NEW, the final state, each fill."""
    qty = sum((D(q) for q, _, _ in legs), D(0))
    cost = sum((D(q) * D(p) for q, p, _ in legs), D(0))
    await order(bus, venue, coid, side, to_str(qty), "NEW")
    await order(bus, venue, coid, side, to_str(qty), "FILLED", to_str(qty), str(cost / qty))
    for n, (q, p, fee) in enumerate(legs, start=1):
        await fill(bus, venue, coid, n, side, q, p, fee)


async def test_restart_finds_orders_by_coid_and_rebuilds_balances_of_this_session_only(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as s1, \
            connected_bus(nats_url, bus_prefix, "executor", session="s2") as s2, \
            connected_bus(nats_url, bus_prefix, "executor", mode="shadow", session="s1") as sh:
        await filled_order(s1, "alpha", "A1", "buy", [("0.5", "100", "0.05"),
                                                      ("0.5", "101", "0.0505")])
        await filled_order(s1, "beta", "B1", "sell", [("0.4", "102", "0.0408")])
        await filled_order(s2, "alpha", "X1", "buy", [("0.3", "100", "0.03")])  # other session
        await filled_order(sh, "alpha", "Y1", "buy", [("0.2", "100", "0.02")])  # other mode
        await order(s1, "alpha", "N1", "buy", "0.1", "NEW")  # never reached the venue
        await order(s1, "alpha", "R1", "buy", "0.1", "REJECTED")

        venues = await build_paper_venues(s1, settings(bus_prefix, nats_url), {}, RULES)

        alpha, beta = venues["alpha"], venues["beta"]
        a1 = await alpha.query("BTC-USDT", "A1")
        assert a1 is not None and (a1.status, a1.filled, a1.side) == ("FILLED", D("1"), "buy")
        assert a1.venue_order_id == "paper-A1" and a1.avg_price == D("100.5")
        assert [(f.trade_id, f.quantity, f.price) for f in a1.fills] == [
            ("paper-A1-1", D("0.5"), D("100")), ("paper-A1-2", D("0.5"), D("101"))]
        assert (await beta.query("BTC-USDT", "B1")).status == "FILLED"  # type: ignore[union-attr]
        for coid in ("X1", "Y1", "N1", "R1"):
            assert await alpha.query("BTC-USDT", coid) is None
        # start 1000 USDT / 1 BTC; alpha bought 1 BTC for 100.5, fees 0.1005
        assert alpha.balances() == {"USDT": D("899.3995"), "BTC": D("2"), "ETH": D("0"),
                                    "SOL": D("0")}
        # beta sold 0.4 BTC at 102 (40.8), fee 0.0408
        assert beta.balances()["USDT"] == D("1040.7592")
        assert beta.balances()["BTC"] == D("0.6")


async def test_after_the_replay_the_venue_never_applies_its_own_fills_twice(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        books = BookCache()
        venues = make_paper_venues(books, settings(bus_prefix, nats_url), {}, RULES)
        replay = PaperReplay(venues, mode="paper", session="s1")
        await replay.start(bus, timeout_s=30)
        alpha = venues["alpha"]
        books.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[],
                          asks=[(D("100"), D("0.5")), (D("101"), D("5"))]))
        o = await alpha.submit("BTC-USDT", "buy", D("1"), "L1")
        after_fill = alpha.balances()
        assert after_fill["USDT"] == D("1000") - D("100.5") - D("0.1005")  # 0.5@100, 0.5@101
        # the executor publishes the order and its fills: they come back through the follower
        await order(bus, "alpha", "L1", "buy", "1", "NEW")
        await order(bus, "alpha", "L1", "buy", "1", o.status, "1", str(o.avg_price))
        for n, f in enumerate(o.fills, start=1):
            await fill(bus, "alpha", "L1", n, "buy", str(f.quantity), str(f.price), str(f.fee))
        # a marker fill of someone else afterwards: once it is applied, the echo was seen
        last = await fill(bus, "alpha", "M1", 1, "buy", "0.001", "100", "0")
        await wait_until(lambda: replay.follower is not None and replay.follower.last_seq >= last,
                         10, what="follower reaching the marker")
        assert alpha.balances()["USDT"] == after_fill["USDT"] - D("0.1")
        assert alpha.balances()["BTC"] == after_fill["BTC"] + D("0.001")
        assert (await alpha.query("BTC-USDT", "L1")) == o

        # restart: a fresh process rebuilds exactly the same balances and order
        fresh = make_paper_venues(BookCache(), settings(bus_prefix, nats_url), {}, RULES)
        await PaperReplay(fresh, mode="paper", session="s1").start(bus, timeout_s=30)
        assert fresh["alpha"].balances() == alpha.balances()
        rebuilt = await fresh["alpha"].query("BTC-USDT", "L1")
        assert rebuilt is not None and rebuilt.filled == D("1") and len(rebuilt.fills) == 2


async def test_a_fill_never_published_is_forgotten_and_the_redelivery_fills_once(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        await order(bus, "alpha", "C1", "buy", "1", "NEW")  # crash after NEW, before publishing
        venues = await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        alpha = venues["alpha"]
        assert await alpha.query("BTC-USDT", "C1") is None
        assert alpha.balances()["USDT"] == D("1000")
        alpha.books.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[],
                                asks=[(D("100"), D("5"))]))
        again = await alpha.submit("BTC-USDT", "buy", D("1"), "C1")
        assert again.status == "FILLED"
        assert alpha.balances()["USDT"] == D("899.9") and alpha.balances()["BTC"] == D("2")


async def test_crash_between_the_order_event_and_its_fills_rebuilds_the_missing_fill(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        await order(bus, "alpha", "P1", "buy", "1", "NEW")
        await order(bus, "alpha", "P1", "buy", "1", "FILLED", "1", "100.6")
        await fill(bus, "alpha", "P1", 1, "buy", "0.4", "100", "0.04")  # fill 2 never published
        venues = await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        p1 = await venues["alpha"].query("BTC-USDT", "P1")
        assert p1 is not None and sum(f.quantity for f in p1.fills) == D("1")
        rest = p1.fills[-1]
        assert (rest.trade_id, rest.quantity, rest.price) == ("paper-P1-rest", D("0.6"), D("101"))
        assert rest.fee == D("0.0606")
        # 1000 - 100.6 cost - (0.04 + 0.0606) fees
        assert venues["alpha"].balances()["USDT"] == D("899.2994")
        assert venues["alpha"].balances()["BTC"] == D("2")


async def test_expired_partial_order_is_rebuilt_with_its_partial_quantity(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        await order(bus, "beta", "E1", "sell", "1", "NEW")
        await order(bus, "beta", "E1", "sell", "1", "EXPIRED", "0.3", "99")
        await fill(bus, "beta", "E1", 1, "sell", "0.3", "99", "0.0297")
        books = BookCache()  # the caller's own cache (already subscribed to the books)
        venues: dict[str, PaperVenue] = await build_paper_venues(
            bus, settings(bus_prefix, nats_url), {}, RULES, books=books)
        assert venues["beta"].books is books
        e1 = await venues["beta"].query("BTC-USDT", "E1")
        assert e1 is not None and (e1.status, e1.quantity, e1.filled) == (
            "EXPIRED", D("1"), D("0.3"))
        assert venues["beta"].balances()["BTC"] == D("0.7")
        assert venues["beta"].balances()["USDT"] == D("1000") + D("29.7") - D("0.0297")


async def test_executor_restarted_with_rebuilt_paper_venues_never_fills_an_intent_twice(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    from arb_common.messages import Intent, VenueReady, decode
    from arb_executor.arbitrage import IntentExecutor
    from arb_executor.gate import Gate
    from arb_executor.legs import client_order_id

    from .conftest import stream_messages

    def feed(books: BookCache) -> None:
        books.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[(D("99"), D("5"))],
                          asks=[(D("100"), D("0.2")), (D("100.5"), D("5"))]))
        books.update(Book(venue="beta", symbol="BTC-USDT", seq=1, bids=[(D("102"), D("5"))],
                          asks=[(D("103"), D("5"))]))

    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        for v in ("alpha", "beta"):
            await bus.publish(bus.subjects.ready(v), VenueReady(venue=v, ready=True, run_id="r"),
                              f"ready:{v}:r:1")
        gate = Gate(["alpha", "beta"])
        await gate.start(bus)
        intent = Intent(intent_id="T1:open", trade_id="T1", symbol="BTC-USDT", action="open",
                        buy_venue="alpha", sell_venue="beta", quantity=D("0.5"),
                        buy_price=D("100.3"), sell_price=D("102"), net_spread_bps=D("50"))
        env, payload = decode(bus.envelope(intent, "intent:T1:open"))

        first = await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        feed(first["alpha"].books)
        await IntentExecutor(bus, first, gate).handle(env, payload)
        # buy 0.2@100 + 0.3@100.5 = 50.15 (+0.05015 fee); sell 0.5@102 = 51 (-0.051 fee)
        assert first["alpha"].balances()["USDT"] == D("1000") - D("50.15") - D("0.05015")
        assert first["beta"].balances()["USDT"] == D("1000") + D("51") - D("0.051")

        # kill -9, restart: memory gone, the same intent is redelivered
        second = await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        feed(second["alpha"].books)
        for v in ("alpha", "beta"):
            assert second[v].balances() == first[v].balances()
        await IntentExecutor(bus, second, gate).handle(env, payload)
        for v in ("alpha", "beta"):
            assert second[v].balances() == first[v].balances()
        msgs = await stream_messages(bus, "EXEC", bus.subjects.any("exec.fill.>"))
        buy, sell = client_order_id("T1:open", "buy"), client_order_id("T1:open", "sell")
        assert sorted((p.venue, p.venue_trade_id) for _, p in msgs) == [
            ("alpha", f"paper-{buy}-1"), ("alpha", f"paper-{buy}-2"), ("beta", f"paper-{sell}-1")]
        assert (await second["alpha"].query("BTC-USDT", buy)).filled == D("0.5")  # type: ignore[union-attr]


async def _balance_snapshots(bus: Bus) -> list[tuple[int, BalanceSnapshot]]:
    from .conftest import stream_messages

    msgs = await stream_messages(bus, "EXEC", bus.subjects.any("exec.balance.>"))
    return [(p.as_of_seq, p) for _, p in msgs]


async def test_ready_venues_publish_their_balances_right_after_what_they_include(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        await filled_order(bus, "alpha", "A1", "buy", [("0.5", "100", "0.05")])
        last = await fill(bus, "beta", "B0", 1, "sell", "0.1", "100", "0")  # an orphan fill
        venues = await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        snaps = await _balance_snapshots(bus)
        assert [(s.venue, as_of) for as_of, s in snaps] == [("alpha", last), ("beta", last + 1)]
        for _, s in snaps:
            assert s.balances == venues[s.venue].balances()
        assert snaps[0][1].balances["USDT"] == D("949.95")


async def test_restart_takes_the_sessions_last_balances_over_the_configured_ones(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        await filled_order(bus, "alpha", "A1", "buy", [("1", "100", "0.1")])
        again = ExecutorSettings(nats_url=nats_url, bus_prefix=bus_prefix, session="s1",
                                 venues="alpha,beta", paper_balances="USDT=5,BTC=5,ETH=0,SOL=0")
        venues = await build_paper_venues(bus, again, {}, RULES)
        assert venues["alpha"].balances() == {"USDT": D("899.9"), "BTC": D("2"), "ETH": D("0"),
                                              "SOL": D("0")}
        other = ExecutorSettings(nats_url=nats_url, bus_prefix=bus_prefix, session="s2",
                                 venues="alpha,beta", paper_balances="USDT=5,BTC=5,ETH=0,SOL=0")
        fresh = await build_paper_venues(bus, other, {}, RULES)  # a new session: its own start
        assert fresh["alpha"].balances()["USDT"] == D("5")


async def test_a_fill_landing_while_the_balances_are_published_is_taken_in_first(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    import asyncio

    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        venues = make_paper_venues(BookCache(), settings(bus_prefix, nats_url), {}, RULES)
        replay = PaperReplay(venues, mode="paper", session="s1")
        await replay.start(bus, timeout_s=30)
        follower = replay.follower
        assert follower is not None
        async with follower._lock:  # the follower is busy: the fill lands, it has not seen it
            late = await fill(bus, "alpha", "L1", 1, "buy", "1", "100", "0.1")
            task = asyncio.create_task(publish_balances(bus, venues, follower))
            await asyncio.sleep(0.3)
            assert not task.done()  # refused: the stream is past what the balances include
        seqs = await task
        assert seqs[0] == late + 1
        snaps = await _balance_snapshots(bus)
        assert snaps[0][0] == late and snaps[0][1].balances["USDT"] == D("899.9")


async def test_a_venue_whose_first_events_expired_without_a_snapshot_is_not_published(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as bus:
        await filled_order(bus, "alpha", "A1", "buy", [("0.5", "100", "0.05")])  # seq 1..3
        stream = bus.subjects.stream_name("EXEC")
        await bus.js.delete_msg(stream, 1)  # the oldest event aged out (max_age)
        await build_paper_venues(bus, settings(bus_prefix, nats_url), {}, RULES)
        assert [s.venue for _, s in await _balance_snapshots(bus)] == ["beta"]
    # A session whose snapshot is still there: its fills after it make the whole account.
    async with connected_bus(nats_url, bus_prefix, "executor", session="s2") as bus:
        s2 = ExecutorSettings(nats_url=nats_url, bus_prefix=bus_prefix, session="s2",
                              venues="alpha,beta", paper_balances=START)
        await build_paper_venues(bus, s2, {}, RULES)
        await filled_order(bus, "alpha", "A2", "buy", [("0.5", "100", "0.05")])
        venues = await build_paper_venues(bus, s2, {}, RULES)
        snaps = [s for _, s in await _balance_snapshots(bus)]
        assert [s.venue for s in snaps] == ["beta", "alpha", "beta", "alpha", "beta"]
        assert snaps[-2].balances == venues["alpha"].balances()
        assert venues["alpha"].balances()["USDT"] == D("949.95")

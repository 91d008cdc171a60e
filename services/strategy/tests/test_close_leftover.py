"""A close whose hedge failed over to the other venue leaves the trade's positions on both
venues (delta neutral): the strategy closes that leftover again, with deterministic intent
ids, once, and the round trip's PnL completes only when the venues are flat."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from strategy_helpers import (
    SnapshotResponder,
    new_strategy,
    open_gate,
    publish_books,
    reverted_books,
    wait_exec_seq,
    wide_books,
)
from test_engine import REVERTED, WIDE, feed, make

from arb_common.bus import Bus
from arb_common.messages import FillEvent, Intent, OrderEvent
from arb_common.testing import connected_bus, wait_until
from arb_executor.arbitrage import IntentExecutor
from arb_executor.gate import Gate
from arb_executor.hedge import HedgeConfig
from arb_executor.paper import BookCache, PaperVenue
from arb_executor.venue_client import MarketRules
from arb_strategy.engine import Engine, close_filled, close_intent_id
from arb_strategy.pnl import PnlTracker

D = Decimal


def ev(intent: Intent, venue: str, side: str, status: str, filled: str, *,
       hedge: int = 0) -> OrderEvent:
    """A terminal order event of ``intent``: one of its legs, or its ``hedge``-th hedge."""
    return OrderEvent(venue=venue, symbol=intent.symbol,
                      client_order_id=f"h{hedge}{venue}" if hedge else f"a{side}",
                      side=side, quantity=intent.quantity,  # type: ignore[arg-type]
                      filled_quantity=D(filled), status=status,  # type: ignore[arg-type]
                      intent_id=intent.intent_id, trade_id=intent.trade_id,
                      role="hedge" if hedge else "leg")


def opened(engine: Engine, clock: Any) -> Intent:
    [intent] = feed(engine, clock, *WIDE, seq=1)  # buy alpha, sell beta, 1 BTC
    engine.on_order(ev(intent, "alpha", "buy", "FILLED", "1"))
    engine.on_order(ev(intent, "beta", "sell", "FILLED", "1"))
    clock.advance(1)
    return intent


def failed_over(close: Intent) -> list[OrderEvent]:
    """The close's buy on beta refused, its hedge too, the next hedge bought on alpha."""
    return [ev(close, "beta", "buy", "REJECTED", "0"), ev(close, "alpha", "sell", "FILLED", "1"),
            ev(close, "beta", "buy", "REJECTED", "0", hedge=1),
            ev(close, "alpha", "buy", "FILLED", "1", hedge=2)]


def test_a_close_whose_hedge_failed_over_is_closed_again_with_the_next_close_id() -> None:
    engine, clock = make(cooldown_s=0.0)
    opening = opened(engine, clock)
    [close] = feed(engine, clock, *REVERTED, seq=3)
    assert (close.intent_id, close.buy_venue, close.sell_venue) == (
        f"{opening.trade_id}:close", "beta", "alpha")
    for e in failed_over(close):
        assert engine.open_trades() == {}  # nothing known until the close's legs are even
        engine.on_order(e)
    left = engine.open_trades()["BTC-USDT"]
    assert (left.trade_id, left.quantity, left.closes) == (opening.trade_id, D(1), 1)
    clock.advance(0.1)
    [again] = feed(engine, clock, *REVERTED, seq=5)
    assert again.intent_id == f"{opening.trade_id}:2:close" == close_intent_id(
        opening.trade_id, 2)
    assert (again.action, again.buy_venue, again.sell_venue, again.quantity) == (
        "close", "beta", "alpha", D(1))
    engine.on_order(ev(again, "beta", "buy", "FILLED", "1"))
    engine.on_order(ev(again, "alpha", "sell", "FILLED", "1"))
    clock.advance(0.1)
    assert engine.open_trades() == {} and feed(engine, clock, *REVERTED, seq=7) == []


def test_a_close_hedged_on_the_short_venue_or_filled_is_done() -> None:
    for events in (
        lambda c: [ev(c, "beta", "buy", "FILLED", "1"), ev(c, "alpha", "sell", "FILLED", "1")],
        lambda c: [ev(c, "beta", "buy", "REJECTED", "0"), ev(c, "alpha", "sell", "FILLED", "1"),
                   ev(c, "beta", "buy", "FILLED", "1", hedge=1)],
    ):
        engine, clock = make(cooldown_s=0.0)
        opened(engine, clock)
        [close] = feed(engine, clock, *REVERTED, seq=3)
        for e in events(close):
            engine.on_order(e)
        assert engine.open_trades() == {} and engine.symbols["BTC-USDT"].exiting is None


def test_a_partly_failed_over_hedge_leaves_only_what_it_undid() -> None:
    engine, clock = make(cooldown_s=0.0)
    opened(engine, clock)
    [close] = feed(engine, clock, *REVERTED, seq=3)
    # sold 0.6 of the long on alpha, covered the whole short on beta: 0.4 bought too many;
    # the hedge's sell on alpha refused, the next sold 0.4 on beta (short again by 0.4)
    for e in (ev(close, "alpha", "sell", "EXPIRED", "0.6"), ev(close, "beta", "buy", "FILLED", "1"),
              ev(close, "alpha", "sell", "REJECTED", "0", hedge=1)):
        engine.on_order(e)
    assert engine.open_trades() == {}  # still uneven: hedging
    engine.on_order(ev(close, "beta", "sell", "FILLED", "0.4", hedge=2))
    assert engine.open_trades()["BTC-USDT"].quantity == D("0.4")
    assert close_filled(engine.open_trades()["BTC-USDT"], {
        "buy": D(1), "sell": D("0.6"), "hedge:beta:sell:h2beta": D("0.4")}) == (D("0.6"), True)


def test_events_delivered_again_or_of_an_earlier_close_change_nothing() -> None:
    engine, clock = make(cooldown_s=0.0)
    opened(engine, clock)
    [close] = feed(engine, clock, *REVERTED, seq=3)
    for e in failed_over(close):
        engine.on_order(e)
    left = engine.open_trades()["BTC-USDT"]
    for e in failed_over(close):  # replayed after a restart, or redelivered
        engine.on_order(e)
    assert engine.open_trades() == {"BTC-USDT": left}
    clock.advance(0.1)
    [again] = feed(engine, clock, *REVERTED, seq=5)
    for e in failed_over(close):  # the first close's events once more: not this close's
        engine.on_order(e)
    assert engine.open_trades() == {} and engine.symbols["BTC-USDT"].exiting is not None
    assert again.intent_id.endswith(":2:close")


def test_a_leftover_is_closed_at_most_max_closes_times() -> None:
    engine, clock = make(cooldown_s=0.0, max_closes=2)
    trade_id = opened(engine, clock).trade_id
    ids = []
    for seq in (3, 5, 7):
        clock.advance(0.1)
        for close in feed(engine, clock, *REVERTED, seq=seq):
            ids.append(close.intent_id)
            for e in failed_over(close):
                engine.on_order(e)
    assert ids == [f"{trade_id}:close", f"{trade_id}:2:close"]
    assert engine.open_trades() == {}  # given up: logged, left to the operator


def test_a_pending_close_survives_a_snapshot_and_resolves_the_same_after_restore() -> None:
    engine, clock = make(cooldown_s=0.0)
    opened(engine, clock)
    [close] = feed(engine, clock, *REVERTED, seq=3)
    events = failed_over(close)
    for e in events[:2]:
        engine.on_order(e)
    state = engine.get_state()
    assert state["exiting"]["BTC-USDT"]["closes"] == 1
    restored, clock2 = make(cooldown_s=0.0)
    restored.restore_state(state)
    assert restored.get_state() == state
    for e in events[2:]:
        engine.on_order(e)
        restored.on_order(e)
    assert restored.open_trades() == engine.open_trades() != {}
    assert restored.get_state() == engine.get_state()


def test_the_last_close_found_on_the_bus_waits_for_its_replayed_outcome() -> None:
    engine, clock = make(cooldown_s=0.0)
    opened(engine, clock)
    before = engine.get_state()  # snapshot taken while the trade was open
    [close] = feed(engine, clock, *REVERTED, seq=3)
    restored, _ = make(cooldown_s=0.0)
    restored.restore_state(before)
    assert restored.reconcile_intent(close, clock.now_ns())
    assert not restored.reconcile_intent(close, clock.now_ns())  # idempotent
    for e in failed_over(close):  # the EXEC replay
        restored.on_order(e)
        engine.on_order(e)
    assert restored.open_trades() == engine.open_trades() != {}
    # A restore that knows the first close pending, and finds the second one on the bus:
    clock.advance(0.1)
    [again] = feed(engine, clock, *REVERTED, seq=5)
    pending, _ = make(cooldown_s=0.0)
    pending.restore_state(restored.get_state() | {"open": {}, "exiting": {
        "BTC-USDT": {**engine.get_state()["exiting"]["BTC-USDT"], "closes": 1,
                     "legs": {}}}})
    assert pending.reconcile_intent(again, clock.now_ns())
    exiting = pending.symbols["BTC-USDT"].exiting
    assert exiting is not None and (exiting.closes, exiting.quantity) == (2, again.quantity)


def fill(n: int, venue: str, side: str, price: str, intent_id: str) -> FillEvent:
    return FillEvent(venue=venue, symbol="BTC-USDT", client_order_id=f"c{n}",
                     venue_trade_id=f"t{n}", side=side,  # type: ignore[arg-type]
                     quantity=D(1), price=D(price), fee=D(0), fee_asset="USDT", ts=n,
                     intent_id=intent_id, trade_id="T")


def test_pnl_completes_when_the_venues_are_flat_not_on_a_failed_over_close() -> None:
    pnl = PnlTracker()
    results = [pnl.on_fill(f) for f in (
        fill(1, "alpha", "buy", "100", "T:open"), fill(2, "beta", "sell", "101", "T:open"),
        fill(3, "alpha", "sell", "100.5", "T:close"),
        fill(4, "alpha", "buy", "100.6", "T:close"),  # the hedge that failed over
    )]
    assert results == [None] * 4 and pnl.open_trades() == 1
    pnl.on_fill(fill(5, "beta", "buy", "100.4", "T:2:close"))
    done = pnl.on_fill(fill(6, "alpha", "sell", "100.3", "T:2:close"))
    assert done is not None and done.quantity == D(1)
    # -100 + 101 + 100.5 - 100.6 - 100.4 + 100.3
    assert done.pnl == D("0.8") and pnl.open_trades() == 0


# ------------------------------------------------------------------ with the real executor


@pytest.mark.integration
async def test_the_executor_fails_a_close_over_and_the_strategy_closes_the_leftover_flat(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    """Real NATS; the strategy service and the executor's intent handling on paper venues.
    Beta's paper venue refuses every order while its books are stale (its close leg and the
    hedge sent there), so the hedge fails over to alpha: the trade's positions are back on
    both venues. The strategy closes them again (``<trade_id>:2:close``) once beta trades."""
    await open_gate(md_bus)
    async with connected_bus(nats_url, bus_prefix, "executor", session="itest") as ex_bus:
        books = BookCache()
        await ex_bus.subscribe(ex_bus.subjects.any("md.book.*.*"), books.on_book)
        rules = {"BTC-USDT": MarketRules("BTC-USDT", D("0.001"), D("0.001"), D("10"), "BTC",
                                         "USDT")}
        venues = {v: PaperVenue(v, books, rules=rules) for v in ("alpha", "beta")}
        gate = Gate(["alpha", "beta"])
        await gate.start(ex_bus)
        executor = IntentExecutor(ex_bus, venues, gate, books=books,
                                  hedge=HedgeConfig(policy="complete", max_attempts=4))
        ex_bus.consume(stream="STRAT", durable="executor-intents",
                       filter_subject=ex_bus.subjects.any("strat.intent.>"),
                       handler=executor.handle)
        svc = await new_strategy(nats_url, bus_prefix, symbols="BTC-USDT")
        try:
            await publish_books(md_bus, *wide_books(100))
            await wait_until(lambda: svc.engine.open_trades(), 15, what="the open decided")
            trade_id = svc.engine.open_trades()["BTC-USDT"].trade_id
            await wait_until(lambda: f"{trade_id}:open" in executor.done, 15, what="the open")
            await wait_exec_seq(svc, md_bus)
            venues["beta"].book_stale_s = -1.0  # beta refuses: "no book" (stale)

            async def reverted_until(pred: Any, what: str) -> None:
                seq = 200
                while not pred():
                    seq += 10
                    await publish_books(md_bus, *reverted_books(seq))
                    await asyncio.sleep(0.2)
                    if seq > 1200:
                        raise AssertionError(f"timed out waiting for {what}")

            await reverted_until(lambda: f"{trade_id}:close" in executor.done, "the close")
            await wait_exec_seq(svc, md_bus)
            assert svc.engine.open_trades()["BTC-USDT"].quantity == D("0.01")  # the leftover
            venues["beta"].book_stale_s = 5.0
            await reverted_until(lambda: f"{trade_id}:2:close" in executor.done, "the re-close")
            await wait_exec_seq(svc, md_bus)
        finally:
            await svc.bus.close()
    positions = {venue: s.quantity for (venue, _), s in svc.memory.positions.states.items()}
    assert positions == {"alpha": D(0), "beta": D(0)}
    assert svc.engine.open_trades() == {} and svc.pnl.open_trades() == 0
    assert svc.memory.stats.metrics()[0].trades == 1  # one round trip, completed once

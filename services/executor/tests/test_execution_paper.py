"""Intent execution on a real NATS with paper venues: gate, idempotency, staleness, hedge."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from arb_common.bus import Bus
from arb_common.messages import Book, FillEvent, Intent, OrderEvent, RiskEvent, VenueReady, decode
from arb_common.testing import wait_until
from arb_executor.arbitrage import IntentExecutor
from arb_executor.gate import Gate, GateClosed
from arb_executor.paper import BookCache, PaperVenue
from arb_executor.venue_client import MarketRules

from .conftest import stream_messages

pytestmark = pytest.mark.integration

RULES = MarketRules("BTC-USDT", D("0.001"), D("0.001"), D("10"), "BTC", "USDT")


def make_intent(n: int = 1, qty: str = "0.5") -> Intent:
    return Intent(intent_id=f"T{n}:open", trade_id=f"T{n}", symbol="BTC-USDT", action="open",
                  buy_venue="alpha", sell_venue="beta", quantity=D(qty), buy_price=D("100"),
                  sell_price=D("101"), net_spread_bps=D("50"))


def paper_venues(beta_bid_qty: str = "5") -> dict[str, PaperVenue]:
    books = BookCache()
    books.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[(D("99"), D("5"))],
                      asks=[(D("100"), D("5"))]))
    books.update(Book(venue="beta", symbol="BTC-USDT", seq=1, bids=[(D("101"), D(beta_bid_qty))],
                      asks=[(D("102"), D("5"))]))
    return {v: PaperVenue(v, books, rules={"BTC-USDT": RULES}) for v in ("alpha", "beta")}


async def set_ready(bus: Bus, venue: str, ready: bool, run: str = "r1") -> None:
    await bus.publish(bus.subjects.ready(venue), VenueReady(venue=venue, ready=ready, run_id=run),
                      f"ready:{venue}:{run}:{int(ready)}")


async def envelope_for(bus: Bus, intent: Intent, ts: int | None = None) -> Any:
    data = bus.envelope(intent, f"intent:{intent.intent_id}")
    env, payload = decode(data)
    if ts is not None:
        env = type(env)(**{**{f: getattr(env, f) for f in env.__struct_fields__}, "ts": ts})
    return env, payload


async def events(bus: Bus) -> tuple[list[OrderEvent], list[FillEvent]]:
    msgs = await stream_messages(bus, "EXEC", bus.subjects.any("exec.>"))
    return ([p for _, p in msgs if isinstance(p, OrderEvent)],
            [p for _, p in msgs if isinstance(p, FillEvent)])


async def test_intent_waits_for_the_gate_then_executes_both_legs(bus: Bus) -> None:
    venues = paper_venues()
    gate = Gate(["alpha", "beta"])
    await set_ready(bus, "alpha", True)       # stored before start: read via last_message
    await gate.start(bus)
    ex = IntentExecutor(bus, venues, gate)
    bus.consume(stream="STRAT", durable="executor-intents",
                filter_subject=bus.subjects.any("strat.intent.>"), handler=ex.handle,
                backoff=(0.2, 0.2, 0.5))
    await bus.publish(bus.subjects.intent("BTC-USDT"), make_intent(), "intent:T1:open")
    await wait_until(lambda: gate.is_open("alpha"), 5)
    import asyncio
    await asyncio.sleep(1.0)
    assert not venues["alpha"].orders and not venues["beta"].orders  # beta gate closed
    await set_ready(bus, "beta", True)        # live message via the core subscription
    await wait_until(lambda: bool(venues["alpha"].orders and venues["beta"].orders), 10)
    await wait_until(lambda: "T1:open" in ex.done, 5)
    orders, fills = await events(bus)
    by_status = sorted((o.venue, o.status) for o in orders)
    assert by_status == [("alpha", "FILLED"), ("alpha", "NEW"), ("beta", "FILLED"), ("beta", "NEW")]
    assert sorted((f.venue, f.side, f.quantity, f.price) for f in fills) == [
        ("alpha", "buy", D("0.5"), D("100")), ("beta", "sell", D("0.5"), D("101"))]
    assert all(f.fee == f.quantity * f.price * D("0.001") for f in fills)


async def test_gate_closed_raises_so_the_intent_is_retried(bus: Bus) -> None:
    venues = paper_venues()
    gate = Gate(["alpha", "beta"])
    ex = IntentExecutor(bus, venues, gate)
    env, intent = await envelope_for(bus, make_intent())
    with pytest.raises(GateClosed):
        await ex.handle(env, intent)
    assert not venues["alpha"].orders
    orders, _ = await events(bus)
    assert orders == []


async def test_same_intent_delivered_twice_after_a_restart_sends_one_order(bus: Bus) -> None:
    venues = paper_venues()
    gate = Gate(["alpha", "beta"])
    for v in ("alpha", "beta"):
        await set_ready(bus, v, True)
    await gate.start(bus)
    env, intent = await envelope_for(bus, make_intent())
    await IntentExecutor(bus, venues, gate).handle(env, intent)
    # A new process (empty memory) gets the same intent again: the NEW publish is a
    # JetStream duplicate, so it queries the venue by coid and finds the order.
    await IntentExecutor(bus, venues, gate).handle(env, intent)
    assert len(venues["alpha"].orders) == 1 and len(venues["beta"].orders) == 1
    orders, fills = await events(bus)
    assert len(orders) == 4 and len(fills) == 2  # re-publishes dropped by msg id


async def test_stale_intent_is_dropped_with_rejected_events(bus: Bus) -> None:
    venues = paper_venues()
    gate = Gate(["alpha", "beta"])
    ex = IntentExecutor(bus, venues, gate, max_age_s=10)
    env, intent = await envelope_for(bus, make_intent())
    env, _ = await envelope_for(bus, intent, ts=env.ts - 11_000_000_000)
    await ex.handle(env, intent)   # gate closed, but stale wins: acked, not retried
    orders, _ = await events(bus)
    # Not checkable (gate closed) but surely never sent (its NEW is new): REJECTED.
    assert sorted((o.venue, o.status, o.reason) for o in orders if o.status != "NEW") == [
        ("alpha", "REJECTED", "stale intent"), ("beta", "REJECTED", "stale intent")]
    assert not venues["alpha"].orders


async def test_short_sell_leg_is_unwound_on_the_cheaper_venue_and_reported(bus: Bus) -> None:
    venues = paper_venues(beta_bid_qty="0.2")   # sell leg can fill only 0.2 of 0.5
    gate = Gate(["alpha", "beta"])
    for v in ("alpha", "beta"):
        await set_ready(bus, v, True)
    await gate.start(bus)
    env, intent = await envelope_for(bus, make_intent())
    # beta's book cannot take the 0.3 left; alpha's bids can: "cheapest" unwinds there.
    await IntentExecutor(bus, venues, gate, books=venues["alpha"].books).handle(env, intent)
    orders, fills = await events(bus)
    assert ("beta", "EXPIRED", D("0.2")) in [(o.venue, o.status, o.filled_quantity) for o in orders]
    hedges = [o for o in orders if o.role == "hedge" and o.status in ("FILLED", "EXPIRED")]
    assert [(o.venue, o.side, o.filled_quantity) for o in hedges] == [("alpha", "sell", D("0.3"))]
    bought = sum((f.quantity for f in fills if f.side == "buy"), D(0))
    sold = sum((f.quantity for f in fills if f.side == "sell"), D(0))
    assert bought == sold == D("0.5")
    risk = [p for _, p in await stream_messages(bus, "RISK", bus.subjects.any("risk.>"))]
    assert len(risk) == 1 and isinstance(risk[0], RiskEvent)
    assert risk[0].kind == "hedged" and not risk[0].blocked and "bought-sold=0" in risk[0].detail


async def test_below_min_notional_rejects_both_legs_without_sending(bus: Bus) -> None:
    venues = paper_venues()
    gate = Gate(["alpha", "beta"])
    for v in ("alpha", "beta"):
        await set_ready(bus, v, True)
    await gate.start(bus)
    env, intent = await envelope_for(bus, make_intent(qty="0.05"))  # 5 USDT < 10
    await IntentExecutor(bus, venues, gate).handle(env, intent)
    orders, _ = await events(bus)
    assert [o.status for o in orders] == ["REJECTED", "REJECTED"]
    assert "min notional" in orders[0].reason
    assert not venues["alpha"].orders

"""Live mode against the real venue simulator: signed REST through ccxt, faults included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import pytest
from prometheus_client import REGISTRY

from arb_common.bus import Bus
from arb_common.errors import UnknownOutcome
from arb_common.messages import FillEvent, Intent, OrderEvent, VenueReady, decode
from arb_executor.arbitrage import IntentExecutor
from arb_executor.gate import Gate
from arb_executor.legs import client_order_id
from arb_executor.testing import venue_clients
from arb_executor.venue_client import OrderRejected, VenueClient
from arb_venue_sim.testing import RunningSim as SimHandle

from .conftest import stream_messages

pytestmark = pytest.mark.integration


def make_intent(n: int, qty: str = "0.01") -> Intent:
    return Intent(intent_id=f"L{n}:open", trade_id=f"L{n}", symbol="BTC-USDT", action="open",
                  buy_venue="alpha", sell_venue="beta", quantity=D(qty), buy_price=D("60000"),
                  sell_price=D("60000"), net_spread_bps=D("5"))


@pytest.fixture
async def clients(venue_sim: SimHandle) -> AsyncIterator[dict[str, VenueClient]]:
    async with venue_clients(venue_sim.configs, VenueClient, timeout_s=1.0) as out:
        yield out


@pytest.fixture
async def gate(bus: Bus) -> Gate:
    g = Gate(["alpha", "beta"])
    for v in ("alpha", "beta"):
        await bus.publish(bus.subjects.ready(v), VenueReady(venue=v, ready=True, run_id="r"),
                          f"ready:{v}:r:1")
    await g.start(bus)
    return g


def env_for(bus: Bus, intent: Intent) -> tuple[Any, Any]:
    return decode(bus.envelope(intent, f"intent:{intent.intent_id}"))


async def order_events(bus: Bus) -> tuple[list[OrderEvent], list[FillEvent]]:
    msgs = [p for _, p in await stream_messages(bus, "EXEC", bus.subjects.any("exec.>"))]
    return ([m for m in msgs if isinstance(m, OrderEvent)],
            [m for m in msgs if isinstance(m, FillEvent)])


@pytest.mark.parametrize("delivery", [None, 1])  # 1: each leg sent while its NEW is stored
async def test_intent_becomes_two_signed_market_orders_with_fills(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate,
        delivery: int | None) -> None:
    intent = make_intent(1, "0.0123456")  # sized down to the 0.00001 lot step
    await IntentExecutor(bus, clients, gate).handle(*env_for(bus, intent), delivery=delivery)
    buy = [r for r in venue_sim.records("alpha") if r["client_order_id"] ==
           client_order_id("L1:open", "buy")]
    sell = [r for r in venue_sim.records("beta") if r["client_order_id"] ==
            client_order_id("L1:open", "sell")]
    assert len(buy) == 1 and len(sell) == 1
    assert D(buy[0]["quantity"]) == D("0.01234") and buy[0]["side"] == "buy"
    orders, fills = await order_events(bus)
    assert sorted((o.venue, o.status) for o in orders) == [
        ("alpha", "FILLED"), ("alpha", "NEW"), ("beta", "FILLED"), ("beta", "NEW")]
    for venue in ("alpha", "beta"):  # in stream order: NEW first, whichever path
        assert [o.status for o in orders if o.venue == venue] == ["NEW", "FILLED"]
    assert {f.venue_trade_id for f in fills} == {
        str(f["trade_id"]) for r in buy + sell for f in r["fills"]}
    assert all(f.fee > 0 and f.fee_asset for f in fills)


async def test_redelivered_intent_sends_no_second_order(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate) -> None:
    env, intent = env_for(bus, make_intent(2))
    await IntentExecutor(bus, clients, gate).handle(env, intent)
    await IntentExecutor(bus, clients, gate).handle(env, intent)  # restarted process
    coid = client_order_id("L2:open", "buy")
    assert [r["client_order_id"] for r in venue_sim.records("alpha")].count(coid) == 1
    orders, fills = await order_events(bus)
    assert len(orders) == 4 and len(fills) >= 2


async def test_redelivery_whose_new_never_reached_the_bus_finds_the_order_on_the_venue(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate) -> None:
    # A process sent both legs while their NEW was being stored, and died before NEW got to
    # JetStream: the venue has the orders, the bus has nothing. The redelivery (count 2)
    # must ask the venue, not send again (a filled coid is free again on Binance).
    env, intent = env_for(bus, make_intent(12))
    for side, venue in (("buy", "alpha"), ("sell", "beta")):
        await clients[venue].submit("BTC-USDT", side, D("0.01"),
                                    client_order_id("L12:open", side))
    await IntentExecutor(bus, clients, gate).handle(env, intent, delivery=2)
    for side, venue in (("buy", "alpha"), ("sell", "beta")):
        coid = client_order_id("L12:open", side)
        assert [r["client_order_id"] for r in venue_sim.records(venue)].count(coid) == 1
    orders, fills = await order_events(bus)
    assert sorted((o.venue, o.status) for o in orders) == [
        ("alpha", "FILLED"), ("alpha", "NEW"), ("beta", "FILLED"), ("beta", "NEW")]
    assert len(fills) >= 2 and not [o for o in orders if o.role == "hedge"]


def violations(kind: str) -> float:
    return REGISTRY.get_sample_value("arb_executor_invariant_violations_total",
                                     {"kind": kind}) or 0.0


async def test_new_already_stored_on_a_first_delivery_is_reported(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate) -> None:
    # Only if the consumer lost its delivery record (deleted and re-created while the
    # intent was young): the executor cannot un-send, so it says so and uses the answer.
    env, intent = env_for(bus, make_intent(13))
    await IntentExecutor(bus, clients, gate).handle(env, intent, delivery=1)
    before = violations("new_before_first_delivery")
    await IntentExecutor(bus, clients, gate).handle(env, intent, delivery=1)
    assert violations("new_before_first_delivery") == before + 2  # one per leg
    orders, _ = await order_events(bus)
    assert all(o.status in ("NEW", "FILLED") for o in orders)


@pytest.mark.parametrize("delivery", [None, 1])
async def test_lost_order_response_is_unknown_then_resolved_by_client_order_id(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate,
        delivery: int | None) -> None:
    venue_sim.fault("alpha", "lose_order_responses", 1.0, duration_s=5)
    await IntentExecutor(bus, clients, gate, resolve_s=5).handle(*env_for(bus, make_intent(3)),
                                                                 delivery=delivery)
    orders, fills = await order_events(bus)
    alpha = [o.status for o in orders if o.venue == "alpha"]
    assert alpha == ["NEW", "UNKNOWN", "FILLED"]
    assert {f.venue for f in fills} == {"alpha", "beta"}
    coid = client_order_id("L3:open", "buy")
    assert [r["client_order_id"] for r in venue_sim.records("alpha")].count(coid) == 1


async def test_5xx_then_order_never_found_becomes_rejected_after_the_window(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate) -> None:
    venue_sim.fault("alpha", "http_5xx", 1.0, duration_s=0.5)
    await IntentExecutor(bus, clients, gate, resolve_s=2).handle(*env_for(bus, make_intent(4)))
    orders, _ = await order_events(bus)
    alpha = [(o.status, o.reason) for o in orders if o.venue == "alpha" and o.role == "leg"]
    assert [s for s, _ in alpha] == ["NEW", "UNKNOWN", "REJECTED"]
    assert alpha[-1][1] == "not found after timeout"
    # The sell leg filled alone: the executor bought it back (hedge) so nothing is naked.
    hedges = [o for o in orders if o.role == "hedge" and o.status == "FILLED"]
    assert len(hedges) == 1 and hedges[0].side == "buy" and hedges[0].filled_quantity == D("0.01")


@pytest.mark.parametrize("delivery", [None, 1])
async def test_venue_rejection_is_final_and_counted(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate,
        delivery: int | None) -> None:
    venue_sim.fault("beta", "reject_orders", 1.0)
    await IntentExecutor(bus, clients, gate).handle(*env_for(bus, make_intent(5)),
                                                    delivery=delivery)
    orders, _ = await order_events(bus)
    beta = [(o.status, o.reason) for o in orders if o.venue == "beta" and o.role == "leg"]
    assert [s for s, _ in beta] == ["NEW", "REJECTED"]
    assert "rejected" in beta[-1][1].lower()
    await asyncio.sleep(0)


@pytest.mark.parametrize("delivery", [None, 1])
async def test_rate_limited_order_waits_retry_after_and_goes_through_once(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate,
        delivery: int | None) -> None:
    venue_sim.fault("alpha", "rate_limit", 1.0, duration_s=0.4)  # 429 + Retry-After: 1
    await IntentExecutor(bus, clients, gate).handle(*env_for(bus, make_intent(6)),
                                                    delivery=delivery)
    orders, fills = await order_events(bus)
    alpha = [o.status for o in orders if o.venue == "alpha" and o.role == "leg"]
    assert alpha == ["NEW", "FILLED"]  # a 429 is not an unknown outcome: nothing was sent
    coid = client_order_id("L6:open", "buy")
    assert [r["client_order_id"] for r in venue_sim.records("alpha")].count(coid) == 1
    assert not [o for o in orders if o.role == "hedge"]


async def test_partially_filled_leg_is_hedged_to_even(
        bus: Bus, venue_sim: SimHandle, clients: dict[str, VenueClient], gate: Gate) -> None:
    venue_sim.fault("beta", "partial_fill", 0.4, duration_s=1.0)
    await IntentExecutor(bus, clients, gate).handle(*env_for(bus, make_intent(7, "0.05")))
    orders, fills = await order_events(bus)
    assert ("beta", "EXPIRED", D("0.02")) in [(o.venue, o.status, o.filled_quantity)
                                              for o in orders if o.role == "leg"]
    bought = sum((f.quantity for f in fills if f.side == "buy"), D(0))
    sold = sum((f.quantity for f in fills if f.side == "sell"), D(0))
    assert bought == sold and [o for o in orders if o.role == "hedge"]


def acks(venue: str, le: str = "+Inf") -> float:
    """Answers observed in arb_executor_order_ack_seconds within ``le`` seconds."""
    labels = {"venue": venue, "le": le}
    return REGISTRY.get_sample_value("arb_executor_order_ack_seconds_bucket", labels) or 0.0


async def test_order_ack_latency_is_observed_once_per_venue_answer(
        venue_sim: SimHandle, clients: dict[str, VenueClient]) -> None:
    alpha, qty = clients["alpha"], D("0.001")
    before, beta = acks("alpha"), acks("beta")
    await alpha.submit("BTC-USDT", "buy", qty, client_order_id("K1:open", "buy"))
    assert (acks("alpha"), acks("beta")) == (before + 1, beta)
    venue_sim.fault("alpha", "order_latency_ms", 300, duration_s=10)
    within = acks("alpha", "0.25")
    await alpha.submit("BTC-USDT", "buy", qty, client_order_id("K2:open", "buy"))
    assert acks("alpha") == before + 2 and acks("alpha", "0.25") == within  # answered late
    venue_sim.clear_faults("alpha")
    venue_sim.fault("alpha", "lose_order_responses", 1.0, duration_s=10)
    with pytest.raises(UnknownOutcome):  # no answer: nothing to time
        await alpha.submit("BTC-USDT", "buy", qty, client_order_id("K3:open", "buy"))
    assert acks("alpha") == before + 2
    venue_sim.clear_faults("alpha")
    venue_sim.fault("alpha", "reject_orders", 1.0, duration_s=10)
    with pytest.raises(OrderRejected):  # a refusal is an answer
        await alpha.submit("BTC-USDT", "buy", qty, client_order_id("K4:open", "buy"))
    assert acks("alpha") == before + 3

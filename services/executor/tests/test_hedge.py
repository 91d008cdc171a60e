"""Hedging uneven legs on a real NATS with paper venues: policies, limits, restarts.

A ``Refusing`` venue wraps a real :class:`PaperVenue` and refuses chosen client order ids the
way a venue does (``OrderRejected``) or leaves them unanswered (``UnknownOutcome``), so each
path of :mod:`arb_executor.hedge` runs deterministically.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal as D
from typing import Any

import pytest

from arb_common.bus import Bus
from arb_common.errors import UnknownOutcome
from arb_common.messages import Book, Intent, OrderEvent, RiskEvent
from arb_executor.arbitrage import IntentExecutor
from arb_executor.gate import Gate
from arb_executor.hedge import UNHEDGED, HedgeConfig, hedge_coid
from arb_executor.legs import client_order_id
from arb_executor.paper import BookCache, PaperVenue
from arb_executor.venue_client import OrderRejected, VenueOrder

from .conftest import stream_messages
from .test_execution_paper import RULES, envelope_for, events, make_intent, set_ready

pytestmark = pytest.mark.integration

BUY = client_order_id("T1:open", "buy")
SELL = client_order_id("T1:open", "sell")


class Refusing:
    """A paper venue that refuses (or never answers) the orders ``refuse(coid)`` picks."""

    def __init__(self, inner: PaperVenue, refuse: Callable[[str], str | None]) -> None:
        self.inner = inner
        self.venue = inner.venue
        self.taker_fee = inner.taker_fee
        self.refuse = refuse
        self.sent: list[str] = []

    def rules(self, symbol: str) -> Any:
        return self.inner.rules(symbol)

    async def submit(self, symbol: str, side: Any, quantity: D, coid: str) -> VenueOrder:
        self.sent.append(coid)
        how = self.refuse(coid)
        if how == "reject":
            raise OrderRejected("Order rejected by the venue (test)")
        if how == "unknown":
            raise UnknownOutcome("timeout (test)")
        return await self.inner.submit(symbol, side, quantity, coid)

    async def query(self, symbol: str, coid: str) -> VenueOrder | None:
        if self.refuse(coid) == "unknown":
            raise UnknownOutcome("timeout (test)")
        return await self.inner.query(symbol, coid)


def books() -> BookCache:
    b = BookCache()
    b.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[(D("99"), D("5"))],
                  asks=[(D("100"), D("5"))]))
    b.update(Book(venue="beta", symbol="BTC-USDT", seq=1, bids=[(D("101"), D("5"))],
                  asks=[(D("102"), D("5"))]))
    return b


def venues(bk: BookCache, refuse: Callable[[str], str | None]) -> dict[str, Refusing]:
    return {v: Refusing(PaperVenue(v, bk, rules={"BTC-USDT": RULES}), refuse)
            for v in ("alpha", "beta")}


async def gate(bus: Bus) -> Gate:
    g = Gate(["alpha", "beta"])
    for v in ("alpha", "beta"):
        await set_ready(bus, v, True)
    await g.start(bus)
    return g


async def risk_events(bus: Bus) -> list[RiskEvent]:
    return [p for _, p in await stream_messages(bus, "RISK", bus.subjects.any("risk.>"))
            if isinstance(p, RiskEvent)]


def net(orders: list[OrderEvent]) -> D:
    """Bought - sold over the final state of every order (legs and hedges)."""
    last: dict[str, OrderEvent] = {}
    for o in orders:
        last[o.client_order_id] = o
    return sum((o.filled_quantity if o.side == "buy" else -o.filled_quantity
                for o in last.values()), D(0))


async def run(bus: Bus, vs: dict[str, Refusing], bk: BookCache, intent: Intent | None = None,
              **kw: Any) -> None:
    g = await gate(bus)
    env, it = await envelope_for(bus, intent or make_intent())
    await IntentExecutor(bus, vs, g, books=bk, **kw).handle(env, it)


async def test_rejected_sell_leg_is_completed_on_its_venue_by_policy(bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: "reject" if c == SELL else None)
    await run(bus, vs, bk, hedge=HedgeConfig(policy="complete"))
    orders, _ = await events(bus)
    hedge = [o for o in orders if o.role == "hedge" and o.status == "FILLED"]
    assert [(o.venue, o.side, o.filled_quantity) for o in hedge] == [("beta", "sell", D("0.5"))]
    assert hedge[0].client_order_id == hedge_coid("T1:open", "beta", 1)
    assert net(orders) == 0
    assert [(r.kind, r.blocked) for r in await risk_events(bus)] == [("hedged", False)]
    assert UNHEDGED.labels("BTC-USDT")._value.get() == 0


async def test_unwind_policy_sells_the_excess_back_on_the_long_leg_venue(bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: "reject" if c == SELL else None)
    await run(bus, vs, bk, hedge=HedgeConfig(policy="unwind"))
    orders, _ = await events(bus)
    hedge = [o for o in orders if o.role == "hedge" and o.status == "FILLED"]
    assert [(o.venue, o.side) for o in hedge] == [("alpha", "sell")]
    assert net(orders) == 0


async def test_cheapest_policy_follows_the_books(bus: Bus) -> None:
    bk = books()  # selling 0.5: beta bids 101 beat alpha's 99 -> complete on beta
    vs = venues(bk, lambda c: "reject" if c == SELL else None)
    await run(bus, vs, bk, hedge=HedgeConfig(policy="cheapest"))
    orders, _ = await events(bus)
    assert [o.venue for o in orders if o.role == "hedge" and o.status == "FILLED"] == ["beta"]


async def test_a_refused_hedge_moves_to_the_other_venue(bus: Bus) -> None:
    bk = books()
    first = hedge_coid("T1:open", "beta", 1)
    vs = venues(bk, lambda c: "reject" if c in (SELL, first) else None)
    await run(bus, vs, bk, hedge=HedgeConfig(policy="complete"))
    orders, _ = await events(bus)
    done = [(o.venue, o.status) for o in orders if o.role == "hedge" and o.status != "NEW"
            and o.status != "SUBMITTED"]
    assert done == [("beta", "REJECTED"), ("alpha", "FILLED")]
    assert net(orders) == 0


async def test_exposure_left_after_the_limit_blocks_the_symbol(bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: None if c == BUY else "reject")  # every sell refused
    await run(bus, vs, bk, hedge=HedgeConfig(policy="complete", max_attempts=3, timeout_s=5))
    orders, _ = await events(bus)
    assert net(orders) == D("0.5")
    assert len([o for o in orders if o.role == "hedge" and o.status == "REJECTED"]) == 3
    risk = await risk_events(bus)
    assert [(r.kind, r.blocked) for r in risk] == [("unhedged_exposure", True)]
    assert UNHEDGED.labels("BTC-USDT")._value.get() == 0.5


async def test_an_unknown_leg_is_not_hedged_around_and_blocks(bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: "unknown" if c == SELL else None)
    await run(bus, vs, bk, resolve_s=0.3)
    orders, _ = await events(bus)
    assert not [o for o in orders if o.role == "hedge"]
    assert [(r.kind, r.blocked) for r in await risk_events(bus)] == [("unknown_outcome", True)]


async def test_a_restart_finds_the_earlier_hedge_and_sends_nothing_again(bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: "reject" if c == SELL else None)
    await run(bus, vs, bk, hedge=HedgeConfig(policy="complete"))
    sent = {v: list(x.sent) for v, x in vs.items()}
    # A new process (nothing in memory) handles the same intent again: legs and hedge are
    # found on the venues by their ids; the rejected sell leg is sent again (it never
    # existed), and if it fills now the legs are uneven the other way: hedged back.
    vs2 = venues(bk, lambda c: "reject" if c == SELL else None)
    for v in vs2:
        vs2[v].inner = vs[v].inner  # the venue (its orders) survives the restart
    await run(bus, vs2, bk, hedge=HedgeConfig(policy="complete"))
    assert sent["beta"] == [SELL, hedge_coid("T1:open", "beta", 1)]
    assert vs2["alpha"].sent == [] and vs2["beta"].sent == [SELL]
    orders, fills = await events(bus)
    assert net(orders) == 0
    keys = [(f.venue, f.venue_trade_id) for f in fills]
    assert len(keys) == len(set(keys))


async def test_a_stale_redelivery_still_evens_out_what_an_earlier_attempt_left(
        bus: Bus) -> None:
    bk = books()
    # First attempt: both legs sent, the sell leg rejected, then the process died before
    # hedging (simulated: hedge limit of zero time).
    vs = venues(bk, lambda c: "reject" if c == SELL else None)
    await run(bus, vs, bk, hedge=HedgeConfig(policy="complete", timeout_s=1e-9))
    orders, _ = await events(bus)
    assert net(orders) == D("0.5")
    # Redelivered long after: stale, so no new legs, but the naked buy is hedged.
    vs2 = venues(bk, lambda c: None)
    for v in vs2:
        vs2[v].inner = vs[v].inner
    g = await gate(bus)
    env, it = await envelope_for(bus, make_intent(), ts=1)
    await IntentExecutor(bus, vs2, g, books=bk,
                         hedge=HedgeConfig(policy="complete")).handle(env, it)
    orders, _ = await events(bus)
    assert net(orders) == 0
    assert vs2["alpha"].sent == [] and vs2["beta"].sent == [hedge_coid("T1:open", "beta", 1)]


async def test_a_stale_redelivery_that_cannot_check_a_sent_leg_says_unknown_not_rejected(
        bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: None)
    await run(bus, vs, bk)  # both legs filled and recorded
    # A new process (empty memory) gets the intent again, stale, while the sell venue does
    # not answer: the leg's NEW is already on the bus, so it may exist: UNKNOWN.
    vs2 = venues(bk, lambda c: "unknown" if c == SELL else None)
    for v in vs2:
        vs2[v].inner = vs[v].inner
    g = await gate(bus)
    env, it = await envelope_for(bus, make_intent(), ts=1)
    await IntentExecutor(bus, vs2, g, books=bk).handle(env, it)
    orders, _ = await events(bus)
    sell = [o.status for o in orders if o.client_order_id == SELL]
    assert "REJECTED" not in sell and sell[-1] == "UNKNOWN"
    assert vs2["alpha"].sent == [] and vs2["beta"].sent == []
    assert ("unknown_outcome", True) in [(r.kind, r.blocked) for r in await risk_events(bus)]


async def test_a_stale_intent_never_sent_is_rejected_even_when_the_venue_is_unreachable(
        bus: Bus) -> None:
    bk = books()
    vs = venues(bk, lambda c: "unknown")
    g = await gate(bus)
    env, it = await envelope_for(bus, make_intent(), ts=1)
    await IntentExecutor(bus, vs, g, books=bk).handle(env, it)
    orders, _ = await events(bus)
    assert sorted((o.side, o.status) for o in orders if o.status != "NEW") == [
        ("buy", "REJECTED"), ("sell", "REJECTED")]
    assert await risk_events(bus) == []

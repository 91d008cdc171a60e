"""One leg of an intent: plan it, record it, send it once, resolve unknown outcomes.

Idempotency (a redelivered intent never sends a second order):
the ``NEW`` event is published BEFORE sending with msg id ``order:<coid>:NEW:0``. If JetStream
answers that publish as a duplicate (it already holds NEW for this coid, within the 2-min
duplicate window, which is far longer than the intent max age) or this process already
attempted the coid, the venue is first queried by coid and a found order is used instead of
sending. A first delivery therefore costs no extra round trip (querying every time would add
one signed REST call, tens of ms on a real venue, to the hot path). A Binance coid is only
unique among OPEN orders, so the "Duplicate order sent." answer alone would not protect a
market order that already filled; the NEW-duplicate check does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from nats.js.api import PubAck
from prometheus_client import Counter
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from arb_common.bus import Bus, SeenIds
from arb_common.clock import Clock
from arb_common.errors import UnknownOutcome
from arb_common.messages import FillEvent, Intent, OrderStatus, Side
from arb_common.money import floor_to_step, to_str

from .order_machine import OrderMachine, OrderState
from .venue_client import DuplicateOrder, MarketRules, OrderRejected, VenueFill, VenueOrder

logger = logging.getLogger(__name__)

ORDERS = Counter("arb_executor_orders_total", "Order events published", ["venue", "status"])
REJECTS = Counter("arb_executor_rejects_total", "Orders rejected", ["venue", "reason"])
UNKNOWN = Counter("arb_executor_unknown_orders_total", "Orders with an unknown outcome", ["venue"])
FILLS = Counter("arb_executor_fills_total", "Fills published", ["venue"])


class TradingVenue(Protocol):
    venue: str

    def rules(self, symbol: str) -> MarketRules: ...

    async def submit(self, symbol: str, side: Side, quantity: Decimal, coid: str) -> VenueOrder: ...

    async def query(self, symbol: str, coid: str) -> VenueOrder | None: ...


def client_order_id(intent_id: str, leg: str, role: str = "leg") -> str:
    """Deterministic, Binance-safe (``^[A-Za-z0-9_-]{1,36}$``) client order id: ``a`` + 30
    hex for a leg, ``h`` + 30 hex for a hedge, so anyone reading the venue (the reconciler)
    tells ours from others' and a hedge from a leg."""
    prefix = "h" if role == "hedge" else "a"
    return prefix + hashlib.sha1(f"{intent_id}:{leg}".encode()).hexdigest()[:30]


def role_of(coid: str) -> Literal["leg", "hedge"]:
    return "hedge" if coid.startswith("h") else "leg"


def reason_label(reason: str) -> str:
    """Bounded-cardinality metric label for a rejection reason."""
    low = reason.lower()
    for key, label in (
        ("stale", "stale_intent"), ("notional", "min_notional"), ("lot_size", "lot_size"),
        ("min quantity", "min_quantity"), ("insufficient", "insufficient_funds"),
        ("not found after timeout", "not_found_after_timeout"), ("unknown venue", "unknown_venue"),
        ("not listed", "unknown_symbol"), ("liquidity", "no_liquidity"), ("no book", "no_book"),
    ):
        if key in low:
            return label
    return "venue_rejected" if "invalidorder" in low or "badrequest" in low else "other"


@dataclass(frozen=True)
class LegPlan:
    leg: Side
    venue: str
    symbol: str
    quantity: Decimal
    coid: str
    expected_price: Decimal
    role: Literal["leg", "hedge"] = "leg"


def plan_legs(
    intent: Intent, buy_rules: MarketRules, sell_rules: MarketRules,
    cap: tuple[Decimal, str] | None = None,
) -> tuple[list[LegPlan], str]:
    """Both legs with the same lot-sized quantity, or ``([...], reason)`` if it cannot trade.

    ``cap``: (the most both venues' free balances allow, which venue/asset limits it); the
    legs are sized down to it, and refused if that leaves less than a venue's minimum."""
    want = intent.quantity
    if cap is not None and cap[0] < want:
        want = max(cap[0], Decimal(0))
    qty = floor_to_step(floor_to_step(want, buy_rules.lot_step), sell_rules.lot_step)
    qty = floor_to_step(qty, buy_rules.lot_step)  # coarser step wins when steps differ
    legs = [
        LegPlan("buy", intent.buy_venue, intent.symbol, qty,
                client_order_id(intent.intent_id, "buy"), intent.buy_price),
        LegPlan("sell", intent.sell_venue, intent.symbol, qty,
                client_order_id(intent.intent_id, "sell"), intent.sell_price),
    ]
    for leg, rules in ((legs[0], buy_rules), (legs[1], sell_rules)):
        if cap is not None and want < intent.quantity and (qty <= 0 or qty < rules.min_qty
                                                             or qty * leg.expected_price
                                                             < rules.min_notional):
            return legs, f"insufficient balance: {cap[1]} allows {qty} of {intent.quantity}"
        if qty <= 0 or qty < rules.min_qty:
            return legs, f"below min quantity on {leg.venue} ({qty} < {rules.min_qty})"
        if qty * leg.expected_price < rules.min_notional:
            return legs, f"below min notional on {leg.venue} ({rules.min_notional})"
    return legs, ""


class EventSink:
    """Publishes order and fill events with their contract msg ids (PubAck checked)."""

    def __init__(self, bus: Bus, clock: Clock) -> None:
        self.bus = bus
        self.clock = clock

    async def order(self, m: OrderMachine) -> PubAck:
        s = m.state
        msg_id = f"order:{s.client_order_id}:{s.status}:{to_str(s.filled_quantity)}"
        ack = await self.bus.publish(self.bus.subjects.order(s.venue, s.symbol),
                                     m.event(self.clock.now_ns()), msg_id)
        if not ack.duplicate:
            ORDERS.labels(s.venue, s.status).inc()
            if s.status == "REJECTED":
                REJECTS.labels(s.venue, reason_label(s.reason)).inc()
            elif s.status == "UNKNOWN":
                UNKNOWN.labels(s.venue).inc()
        return ack

    async def fill(self, s: OrderState, f: VenueFill) -> None:
        ev = FillEvent(
            venue=s.venue, symbol=s.symbol, client_order_id=s.client_order_id,
            venue_trade_id=f.trade_id, side=s.side, quantity=f.quantity, price=f.price,
            fee=f.fee, fee_asset=f.fee_asset,
            ts=f.ts_ms * 1_000_000 if f.ts_ms else self.clock.now_ns(),
            venue_order_id=s.venue_order_id, intent_id=s.intent_id, trade_id=s.trade_id,
            origin_ts=s.origin_ts,
        )
        ack = await self.bus.publish(self.bus.subjects.fill(s.venue, s.symbol), ev,
                                     f"fill:{s.venue}:{f.trade_id}")
        if not ack.duplicate:
            FILLS.labels(s.venue).inc()


class _NotYet(Exception):
    """The venue does not (yet) know the client order id."""


class LegRunner:
    def __init__(self, sink: EventSink, attempted: SeenIds, *, resolve_s: float = 12.0) -> None:
        self.sink = sink
        self.attempted = attempted
        self.resolve_s = resolve_s
        # coids whose NEW was already on the bus or attempted by this process: an earlier
        # attempt (before a crash or a redelivery) may have left orders, hedges included.
        self.recovered = SeenIds(100_000)

    @staticmethod
    def machine(plan: LegPlan, intent: Intent) -> OrderMachine:
        return OrderMachine(OrderState(
            venue=plan.venue, symbol=plan.symbol, client_order_id=plan.coid, side=plan.leg,
            quantity=plan.quantity, intent_id=intent.intent_id, trade_id=intent.trade_id,
            origin_ts=intent.origin_ts, role=plan.role,
        ))

    async def reject(self, plan: LegPlan, intent: Intent, reason: str) -> OrderMachine:
        """Refused locally, never sent: one REJECTED event."""
        m = self.machine(plan, intent)
        m.transition("REJECTED", reason=reason)
        await self.sink.order(m)
        return m

    async def run(self, plan: LegPlan, intent: Intent, venue: TradingVenue) -> OrderMachine:
        m = self.machine(plan, intent)
        ack = await self.sink.order(m)  # NEW: the durable record that we are about to send
        seen_before = ack.duplicate or plan.coid in self.attempted
        self.attempted.add(plan.coid)
        if seen_before:
            self.recovered.add(plan.coid)
        if seen_before:
            existing = await venue.query(plan.symbol, plan.coid)  # UnknownOutcome -> nak
            if existing is not None:
                logger.info("redelivered intent: order found on venue venue=%s "
                            "client_order_id=%s status=%s", plan.venue, plan.coid, existing.status)
                await self.apply(m, existing)
                return m
        m.transition("SUBMITTED")
        try:
            order: VenueOrder | None = await venue.submit(
                plan.symbol, plan.leg, plan.quantity, plan.coid)
        except OrderRejected as exc:
            logger.warning("order rejected venue=%s client_order_id=%s reason=%s",
                           plan.venue, plan.coid, exc.reason)
            m.transition("REJECTED", reason=exc.reason)
            await self.sink.order(m)
            return m
        except DuplicateOrder:
            order = await self.resolve(m, venue, "duplicate client order id")
        except UnknownOutcome as exc:
            logger.warning("unknown outcome venue=%s client_order_id=%s error=%s",
                           plan.venue, plan.coid, exc)
            order = await self.resolve(m, venue, str(exc))
        if order is not None:
            await self.apply(m, order)
        return m

    async def resolve(self, m: OrderMachine, venue: TradingVenue, why: str) -> VenueOrder | None:
        """UNKNOWN -> query the coid with backoff until found or the window closes."""
        s = m.state
        if m.status != "UNKNOWN":
            m.transition("UNKNOWN", reason=why)
            await self.sink.order(m)
        last: BaseException | None = None
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((UnknownOutcome, _NotYet)),
                wait=wait_random_exponential(multiplier=0.1, max=2.0),
                stop=stop_after_delay(self.resolve_s),
            ):
                with attempt:
                    found = await venue.query(s.symbol, s.client_order_id)
                    if found is None:
                        raise _NotYet(s.client_order_id)
                    return found
        except RetryError as exc:
            last = exc.last_attempt.exception()
        if isinstance(last, _NotYet):
            m.transition("REJECTED", reason="not found after timeout")
            await self.sink.order(m)
        else:
            logger.error("order outcome still unknown venue=%s client_order_id=%s error=%r "
                         "(left UNKNOWN for the reconciler)", s.venue, s.client_order_id, last)
        return None

    async def apply(self, m: OrderMachine, order: VenueOrder) -> None:
        """Move the machine to the venue's state and publish the event, then every fill."""
        status: OrderStatus = order.status
        if status != m.status or order.filled != m.state.filled_quantity:
            m.transition(status, filled=order.filled, venue_order_id=order.venue_order_id,
                         avg_price=order.avg_price)
        # The order event and its fills are independent messages: publish them back to back
        # (same connection, so the stream keeps this order) and wait for every PubAck together
        # instead of one round trip each. All are acknowledged before this returns.
        state = m.state
        results = await asyncio.gather(self.sink.order(m),
                                       *(self.sink.fill(state, f) for f in order.fills),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

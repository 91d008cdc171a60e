"""One leg of an intent: plan it, record it, send it once, resolve unknown outcomes.

Idempotency (a redelivered intent never sends a second order): every order has a ``NEW``
event with msg id ``order:<coid>:NEW:0``, acknowledged by JetStream before any later event of
the order and before the intent is acked.

- The intent's first delivery (JetStream's delivery count, kept in the durable consumer's
  state, is 1) of a coid this process never attempted: nobody can have sent it, so the order
  goes out while NEW is being stored.
- Any other case (a redelivery, a caller that does not know the count, a hedge): NEW is
  stored first. If JetStream answers it as a duplicate (it already holds NEW for this coid,
  within the 2-min duplicate window, far longer than the intent max age), this process
  already attempted the coid, or the intent was delivered before, the venue is queried by
  coid and a found order is used instead of sending.

A first delivery therefore costs no extra round trip (querying every time would add one
signed REST call, tens of ms on a real venue, to the hot path). A Binance coid is only
unique among OPEN orders, so the "Duplicate order sent." answer alone would not protect a
market order that already filled; the delivery count and the NEW-duplicate check do.
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
from arb_common.messages import FillEvent, Intent, OrderEvent, OrderStatus, Side
from arb_common.money import floor_to_step, to_str

from .order_machine import INVARIANT_VIOLATIONS, OrderMachine, OrderState
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
        return await self._order(*self._order_message(m))

    def order_soon(self, m: OrderMachine) -> asyncio.Task[PubAck]:
        """Start publishing ``m``'s event as it is now (the machine may move on meanwhile);
        the task completes with the PubAck."""
        return asyncio.ensure_future(self._order(*self._order_message(m)))

    def _order_message(self, m: OrderMachine) -> tuple[OrderEvent, str]:
        s = m.state
        return (m.event(self.clock.now_ns()),
                f"order:{s.client_order_id}:{s.status}:{to_str(s.filled_quantity)}")

    async def _order(self, ev: OrderEvent, msg_id: str) -> PubAck:
        ack = await self.bus.publish(self.bus.subjects.order(ev.venue, ev.symbol), ev, msg_id)
        if not ack.duplicate:
            ORDERS.labels(ev.venue, ev.status).inc()
            if ev.status == "REJECTED":
                REJECTS.labels(ev.venue, reason_label(ev.reason)).inc()
            elif ev.status == "UNKNOWN":
                UNKNOWN.labels(ev.venue).inc()
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

    async def run(self, plan: LegPlan, intent: Intent, venue: TradingVenue, *,
                  delivery: int | None = None) -> OrderMachine:
        """Send ``plan`` once and follow it to the venue's answer.

        ``delivery``: JetStream's delivery count of the intent (the durable consumer's own
        record; None: not known). On delivery 1 no process can have sent this coid before, so
        unless this process did, the order goes out while its NEW is being stored rather than
        after it (one JetStream round trip off the hot path). Otherwise NEW is stored first,
        and if it was already on the bus, this process attempted the coid, or the intent was
        delivered before (its NEW may never have reached the bus), the venue is asked for the
        coid before anything is sent."""
        m = self.machine(plan, intent)
        if delivery == 1 and plan.coid not in self.attempted:
            return await self._run_first(m, plan, venue)
        ack = await self.sink.order(m)  # NEW: the durable record that we are about to send
        seen_before = (ack.duplicate or plan.coid in self.attempted
                       or (delivery is not None and delivery > 1))
        self.attempted.add(plan.coid)
        if seen_before:
            self.recovered.add(plan.coid)
            existing = await venue.query(plan.symbol, plan.coid)  # UnknownOutcome -> nak
            if existing is not None:
                logger.info("redelivered intent: order found on venue venue=%s "
                            "client_order_id=%s status=%s", plan.venue, plan.coid, existing.status)
                await self.apply(m, existing)
                return m
        m.transition("SUBMITTED")
        return await self._outcome(m, venue, await self._send(plan, venue))

    async def _run_first(self, m: OrderMachine, plan: LegPlan,
                         venue: TradingVenue) -> OrderMachine:
        """NEW and the order at once; NEW's PubAck is awaited before any later event of the
        order (the stream keeps NEW first) and before the intent is acked. If NEW cannot be
        stored, the error naks the intent: its redelivery (count 2) queries the coid first."""
        self.attempted.add(plan.coid)
        new = self.sink.order_soon(m)
        m.transition("SUBMITTED")
        try:
            sent = await self._send(plan, venue)
        finally:
            ack = await new
        if ack.duplicate:
            # Only if the consumer's delivery record was lost: a consumer deleted and
            # re-created under this running subscription before its next idle fetch told
            # the bus (a message older than the consumer counts 2, see delivery_count).
            INVARIANT_VIOLATIONS.labels("new_before_first_delivery").inc()
            logger.error("NEW already stored on the first delivery of its intent venue=%s "
                         "client_order_id=%s: the venue's answer is used, the reconciler "
                         "checks the coid", plan.venue, plan.coid)
            self.recovered.add(plan.coid)
        return await self._outcome(m, venue, sent)

    @staticmethod
    async def _send(plan: LegPlan, venue: TradingVenue
                    ) -> VenueOrder | OrderRejected | DuplicateOrder | UnknownOutcome:
        try:
            return await venue.submit(plan.symbol, plan.leg, plan.quantity, plan.coid)
        except (OrderRejected, DuplicateOrder, UnknownOutcome) as exc:
            return exc

    async def _outcome(self, m: OrderMachine, venue: TradingVenue,
                       sent: VenueOrder | OrderRejected | DuplicateOrder | UnknownOutcome
                       ) -> OrderMachine:
        s = m.state
        order: VenueOrder | None
        if isinstance(sent, OrderRejected):
            logger.warning("order rejected venue=%s client_order_id=%s reason=%s",
                           s.venue, s.client_order_id, sent.reason)
            m.transition("REJECTED", reason=sent.reason)
            await self.sink.order(m)
            return m
        if isinstance(sent, DuplicateOrder):
            order = await self.resolve(m, venue, "duplicate client order id")
        elif isinstance(sent, UnknownOutcome):
            logger.warning("unknown outcome venue=%s client_order_id=%s error=%s",
                           s.venue, s.client_order_id, sent)
            order = await self.resolve(m, venue, str(sent))
        else:
            order = sent
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

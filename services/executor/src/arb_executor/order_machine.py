"""One order's lifecycle as a state machine.

    NEW -> SUBMITTED -> ACKED -> PARTIALLY_FILLED -> FILLED
                     \\-> CANCELED / REJECTED / EXPIRED / UNKNOWN

``UNKNOWN`` (timeout, 5xx: the venue may or may not have the order) is resolved by querying
the client order id and may then move to any venue-reported state. Terminal states never
move again, and the filled quantity never shrinks nor exceeds the order quantity. An illegal
transition is refused: :class:`InvariantViolation` is raised and counted, the order keeps its
previous state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from prometheus_client import Counter

from arb_common.errors import InvariantViolation
from arb_common.messages import OrderEvent, OrderStatus, Side

logger = logging.getLogger(__name__)

INVARIANT_VIOLATIONS = Counter(
    "arb_executor_invariant_violations_total", "Illegal order transitions refused", ["kind"]
)

TERMINAL: frozenset[str] = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
OPEN: frozenset[str] = frozenset({"NEW", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "UNKNOWN"})
_VENUE_STATES: frozenset[str] = frozenset(
    {"ACKED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED", "UNKNOWN"}
)

ALLOWED: dict[str, frozenset[str]] = {
    # NEW -> REJECTED: refused locally (stale intent, below min notional, ...).
    # NEW -> venue states: a redelivered intent found the order already on the venue.
    "NEW": frozenset({"SUBMITTED"}) | _VENUE_STATES,
    "SUBMITTED": _VENUE_STATES,
    "ACKED": frozenset({"PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "UNKNOWN"}),
    "PARTIALLY_FILLED": frozenset({"PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "UNKNOWN"}),
    "UNKNOWN": _VENUE_STATES,
}


@dataclass(frozen=True)
class OrderState:
    venue: str
    symbol: str
    client_order_id: str
    side: Side
    quantity: Decimal
    status: OrderStatus = "NEW"
    filled_quantity: Decimal = Decimal(0)
    venue_order_id: str | None = None
    avg_price: Decimal | None = None
    reason: str = ""
    intent_id: str = ""
    trade_id: str = ""
    role: Literal["leg", "hedge"] = "leg"
    origin_ts: int = 0


@dataclass
class OrderMachine:
    state: OrderState
    history: list[OrderStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.history.append(self.state.status)

    @property
    def status(self) -> OrderStatus:
        return self.state.status

    @property
    def is_terminal(self) -> bool:
        return self.state.status in TERMINAL

    def transition(
        self,
        status: OrderStatus,
        *,
        filled: Decimal | None = None,
        venue_order_id: str | None = None,
        avg_price: Decimal | None = None,
        reason: str | None = None,
    ) -> OrderState:
        """Move to ``status``; raise :class:`InvariantViolation` if that is illegal."""
        cur = self.state
        new_filled = cur.filled_quantity if filled is None else filled
        problem = self._check(cur, status, new_filled)
        if problem:
            INVARIANT_VIOLATIONS.labels("order_transition").inc()
            logger.error(
                "illegal order transition venue=%s client_order_id=%s %s -> %s: %s",
                cur.venue, cur.client_order_id, cur.status, status, problem,
            )
            raise InvariantViolation(
                f"order {cur.client_order_id}: {cur.status} -> {status}: {problem}"
            )
        self.state = replace(
            cur,
            status=status,
            filled_quantity=new_filled,
            venue_order_id=venue_order_id or cur.venue_order_id,
            avg_price=avg_price if avg_price is not None else cur.avg_price,
            reason=cur.reason if reason is None else reason,
        )
        self.history.append(status)
        return self.state

    @staticmethod
    def _check(cur: OrderState, status: str, filled: Decimal) -> str:
        if cur.status in TERMINAL:
            return "order is already terminal"
        if status not in ALLOWED.get(cur.status, frozenset()):
            return "transition not allowed"
        if filled < cur.filled_quantity:
            return f"filled quantity would shrink {cur.filled_quantity} -> {filled}"
        if filled > cur.quantity:
            return f"filled {filled} exceeds order quantity {cur.quantity}"
        if status == "FILLED" and filled != cur.quantity:
            return f"FILLED with filled {filled} != quantity {cur.quantity}"
        return ""

    def event(self, ts: int) -> OrderEvent:
        s = self.state
        return OrderEvent(
            venue=s.venue,
            symbol=s.symbol,
            client_order_id=s.client_order_id,
            side=s.side,
            quantity=s.quantity,
            filled_quantity=s.filled_quantity,
            status=s.status,
            venue_order_id=s.venue_order_id,
            avg_price=s.avg_price,
            intent_id=s.intent_id,
            trade_id=s.trade_id,
            reason=s.reason,
            ts=ts,
            origin_ts=s.origin_ts,
            role=s.role,
        )

"""One bus batch of ``exec.*`` events → one PostgreSQL transaction (idempotent).

- Orders are upserted on (mode, venue, client_order_id); the status only moves forward in
  the lifecycle (:data:`STATUS_RANK`) and ``filled_quantity`` never decreases, so a stale or
  redelivered event changes nothing. ``order_status_history`` gets one row per distinct
  status (``ON CONFLICT DO NOTHING``).
- Fills are ``INSERT ... ON CONFLICT (mode, venue, venue_trade_id) DO NOTHING RETURNING``;
  only the fills actually inserted move positions (so a redelivery never double counts).
- Positions are locked (``SELECT ... FOR UPDATE``, in key order so concurrent writers cannot
  deadlock) and updated with :mod:`arb_state.positions`.

The same rules decide inside the batch (Python fold) and against the stored row (SQL), so
several state replicas sharing the durable consumer stay correct.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from arb_common.ledger import Fill, Order, OrderStatusHistory, Position
from arb_common.messages import Envelope, FillEvent, OrderEvent
from sqlalchemy import Table, and_, case, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from .positions import PositionState, apply_fill, fee_in_quote

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Lifecycle order; terminal statuses share the top rank (the first terminal one wins unless a
# later event carries more filled quantity, e.g. CANCELED after a partial fill → FILLED).
STATUS_RANK: dict[str, int] = {
    "NEW": 0,
    "SUBMITTED": 1,
    "UNKNOWN": 2,
    "ACKED": 3,
    "PARTIALLY_FILLED": 4,
    "FILLED": 5,
    "CANCELED": 5,
    "REJECTED": 5,
    "EXPIRED": 5,
}

PosKey = tuple[str, str, str, str]  # mode, session, venue, symbol


def ns_to_dt(ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ns // 1000)


@dataclass
class PositionUpdate:
    mode: str
    session: str
    venue: str
    symbol: str
    state: PositionState
    updated_at: datetime


@dataclass
class IngestResult:
    orders: int = 0
    fills: int = 0
    fills_inserted: int = 0
    positions: list[PositionUpdate] = field(default_factory=list)

    @property
    def fills_duplicate(self) -> int:
        return self.fills - self.fills_inserted


def order_wins(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when ``new`` is further along the lifecycle than ``old``."""
    r_old, r_new = STATUS_RANK.get(old["status"], -1), STATUS_RANK.get(new["status"], -1)
    return r_new > r_old or (r_new == r_old and new["filled_quantity"] > old["filled_quantity"])


def merge_order(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Python twin of the SQL upsert in :func:`_upsert_orders` (used within one batch)."""
    out = dict(old)
    if order_wins(old, new):
        out["status"] = new["status"]
        out["reason"] = new["reason"]
        out["avg_price"] = new["avg_price"] if new["avg_price"] is not None else old["avg_price"]
    out["filled_quantity"] = max(old["filled_quantity"], new["filled_quantity"])
    out["venue_order_id"] = new["venue_order_id"] or old["venue_order_id"]
    out["intent_id"] = old["intent_id"] or new["intent_id"]
    out["trade_id"] = old["trade_id"] or new["trade_id"]
    out["created_at"] = min(old["created_at"], new["created_at"])
    out["updated_at"] = max(old["updated_at"], new["updated_at"])
    return out


def _order_row(env: Envelope, ev: OrderEvent) -> dict[str, Any]:
    ts = ns_to_dt(ev.ts or env.ts)
    return {
        "mode": env.mode, "session": env.session, "venue": ev.venue, "symbol": ev.symbol,
        "client_order_id": ev.client_order_id, "venue_order_id": ev.venue_order_id,
        "side": ev.side, "quantity": ev.quantity, "filled_quantity": ev.filled_quantity,
        "avg_price": ev.avg_price, "status": ev.status, "intent_id": ev.intent_id,
        "trade_id": ev.trade_id, "reason": ev.reason, "created_at": ts, "updated_at": ts,
    }  # fmt: skip


def _fill_row(env: Envelope, ev: FillEvent) -> dict[str, Any]:
    return {
        "mode": env.mode, "session": env.session, "venue": ev.venue, "symbol": ev.symbol,
        "client_order_id": ev.client_order_id, "venue_order_id": ev.venue_order_id,
        "venue_trade_id": ev.venue_trade_id, "side": ev.side, "quantity": ev.quantity,
        "price": ev.price, "fee": ev.fee, "fee_asset": ev.fee_asset,
        "ts": ns_to_dt(ev.ts or env.ts), "intent_id": ev.intent_id, "trade_id": ev.trade_id,
    }  # fmt: skip


def ingest_batch(engine: Engine, events: Sequence[tuple[Envelope, Any]]) -> IngestResult:
    """Write every order/fill event of ``events`` in one transaction; return what changed."""
    orders: dict[tuple[str, str, str], dict[str, Any]] = {}
    history: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    fills: list[dict[str, Any]] = []
    for env, ev in events:
        if isinstance(ev, OrderEvent):
            row = _order_row(env, ev)
            key = (row["mode"], row["venue"], row["client_order_id"])
            orders[key] = merge_order(orders[key], row) if key in orders else row
            history.setdefault((*key, row["status"]), {
                "mode": env.mode, "session": env.session, "venue": ev.venue,
                "client_order_id": ev.client_order_id, "status": ev.status,
                "filled_quantity": ev.filled_quantity, "reason": ev.reason,
                "msg_id": env.id, "ts": row["updated_at"],
            })  # fmt: skip
        elif isinstance(ev, FillEvent):
            fills.append(_fill_row(env, ev))
    result = IngestResult(orders=sum(1 for _, ev in events if isinstance(ev, OrderEvent)),
                          fills=len(fills))
    if not orders and not fills:
        return result
    with engine.begin() as conn:
        # Rows in key order, so concurrent writers lock in the same order (no deadlocks).
        # executemany form: SQLAlchemy's "insertmanyvalues" sends multi-row VALUES pages
        # from one cached compiled statement (compiling a 256-row VALUES each time cost
        # ~10x the database time).
        if orders:
            conn.execute(_ORDER_UPSERT, [orders[k] for k in sorted(orders)])
            conn.execute(_HISTORY_INSERT, [history[k] for k in sorted(history)])
        inserted = _insert_fills(conn, _dedupe(fills)) if fills else []
        result.fills_inserted = len(inserted)
        if inserted:
            result.positions = _apply_positions(conn, inserted)
    return result


def _order_upsert() -> Any:
    t = cast(Table, Order.__table__)
    ins = pg_insert(t)
    ex = ins.excluded
    rank_old = case(STATUS_RANK, value=t.c.status, else_=-1)
    rank_new = case(STATUS_RANK, value=ex.status, else_=-1)
    wins = or_(
        rank_new > rank_old,
        and_(rank_new == rank_old, ex.filled_quantity > t.c.filled_quantity),
    )
    return ins.on_conflict_do_update(
        index_elements=[t.c.mode, t.c.venue, t.c.client_order_id],
        set_={
            "status": case((wins, ex.status), else_=t.c.status),
            "reason": case((wins, ex.reason), else_=t.c.reason),
            "avg_price": case((wins, func.coalesce(ex.avg_price, t.c.avg_price)),
                              else_=t.c.avg_price),
            "filled_quantity": func.greatest(t.c.filled_quantity, ex.filled_quantity),
            "venue_order_id": func.coalesce(ex.venue_order_id, t.c.venue_order_id),
            "intent_id": func.coalesce(func.nullif(t.c.intent_id, ""), ex.intent_id),
            "trade_id": func.coalesce(func.nullif(t.c.trade_id, ""), ex.trade_id),
            "created_at": func.least(t.c.created_at, ex.created_at),
            "updated_at": func.greatest(t.c.updated_at, ex.updated_at),
        },
    )


_FILLS = cast(Table, Fill.__table__)
_POSITIONS = cast(Table, Position.__table__)
_ORDER_UPSERT = _order_upsert()
_HISTORY_INSERT = pg_insert(cast(Table, OrderStatusHistory.__table__)).on_conflict_do_nothing()
_FILL_INSERT = (
    pg_insert(_FILLS)
    .on_conflict_do_nothing(index_elements=[_FILLS.c.mode, _FILLS.c.venue, _FILLS.c.venue_trade_id])
    .returning(_FILLS.c.mode, _FILLS.c.venue, _FILLS.c.venue_trade_id)
)
_POSITION_BLANK = pg_insert(_POSITIONS).on_conflict_do_nothing()
_POSITION_UPSERT = pg_insert(_POSITIONS)
_POSITION_UPSERT = _POSITION_UPSERT.on_conflict_do_update(
    index_elements=[_POSITIONS.c.mode, _POSITIONS.c.session, _POSITIONS.c.venue,
                    _POSITIONS.c.symbol],
    set_={c: _POSITION_UPSERT.excluded[c] for c in
          ("quantity", "avg_price", "realized_pnl", "fees", "updated_at")},
)


def _dedupe(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault((row["mode"], row["venue"], row["venue_trade_id"]), row)
    return list(seen.values())


def _insert_fills(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert new fills (unique keys); return the rows actually inserted, in batch order."""
    new = {(r.mode, r.venue, r.venue_trade_id) for r in conn.execute(_FILL_INSERT, rows)}
    return [r for r in rows if (r["mode"], r["venue"], r["venue_trade_id"]) in new]


def _apply_positions(
    conn: Connection, fills: list[dict[str, Any]]
) -> list[PositionUpdate]:
    t = _POSITIONS
    keys = sorted({(f["mode"], f["session"], f["venue"], f["symbol"]) for f in fills})
    now = datetime.now(UTC)
    blank = [dict(zip(("mode", "session", "venue", "symbol"), k, strict=True)) | {"updated_at": now}
             for k in keys]
    conn.execute(_POSITION_BLANK, blank)
    locked = conn.execute(
        select(t)
        .where(tuple_(t.c.mode, t.c.session, t.c.venue, t.c.symbol).in_(keys))
        .order_by(t.c.mode, t.c.session, t.c.venue, t.c.symbol)
        .with_for_update()
    )
    states: dict[PosKey, PositionState] = {
        (r.mode, r.session, r.venue, r.symbol): PositionState(
            r.quantity, r.avg_price, r.realized_pnl, r.fees
        )
        for r in locked
    }
    for f in fills:
        key = (f["mode"], f["session"], f["venue"], f["symbol"])
        fee_q = fee_in_quote(f["symbol"], f["fee"], f["fee_asset"], f["price"])
        if fee_q is None:
            logger.warning("fee not valued venue=%s symbol=%s fee=%s fee_asset=%s trade=%s",
                           f["venue"], f["symbol"], f["fee"], f["fee_asset"], f["venue_trade_id"])
        states[key] = apply_fill(states[key], side=f["side"], quantity=f["quantity"],
                                 price=f["price"], fee_quote=fee_q)
    states = {k: quantize_state(s) for k, s in states.items()}
    rows = [
        {"mode": k[0], "session": k[1], "venue": k[2], "symbol": k[3],
         "quantity": s.quantity, "avg_price": s.avg_price, "realized_pnl": s.realized_pnl,
         "fees": s.fees, "updated_at": now}
        for k, s in states.items()
    ]  # fmt: skip
    conn.execute(_POSITION_UPSERT, rows)
    return [PositionUpdate(*k, states[k], now) for k in states]


_SCALE = Decimal("1e-18")


def quantize_state(s: PositionState) -> PositionState:
    """Round to NUMERIC(38,18), so memory, Redis and the database hold the same numbers."""
    return PositionState(*(v.quantize(_SCALE) for v in
                           (s.quantity, s.avg_price, s.realized_pnl, s.fees)))

"""One bus batch of ``exec.*`` events → one PostgreSQL transaction (idempotent).

- Orders are upserted on (mode, venue, client_order_id); the status only moves forward in
  the lifecycle (:data:`STATUS_RANK`) and ``filled_quantity`` never decreases, so a stale or
  redelivered event changes nothing. ``order_status_history`` gets one row per distinct
  status (``ON CONFLICT DO NOTHING``).
- Fills are ``INSERT ... ON CONFLICT (mode, venue, venue_trade_id) DO NOTHING RETURNING``;
  only the fills actually inserted move positions (so a redelivery never double counts).
- Positions are locked (``SELECT ... FOR UPDATE``, in key order so concurrent writers cannot
  deadlock) and updated with :mod:`arb_common.positions`.

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

import psycopg
from sqlalchemy import Table, and_, case, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.engine import Connection, Engine, make_url

from arb_common.ledger import Fill, Order, OrderStatusHistory, Position
from arb_common.messages import Envelope, FillEvent, OrderEvent
from arb_common.positions import PositionState, apply_fill, fee_in_quote

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


@dataclass
class _Prepared:
    result: IngestResult
    orders: list[dict[str, Any]]  # key order (concurrent writers lock in the same order)
    history: list[dict[str, Any]]
    fills: list[dict[str, Any]]  # deduplicated


def _prepare(events: Sequence[tuple[Envelope, Any]]) -> _Prepared:
    """The batch folded into rows (pure Python, shared by both writers)."""
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
    return _Prepared(result, [orders[k] for k in sorted(orders)],
                     [history[k] for k in sorted(history)], _dedupe(fills) if fills else [])


def ingest_batch(engine: Engine, events: Sequence[tuple[Envelope, Any]]) -> IngestResult:
    """Write every order/fill event of ``events`` in one transaction; return what changed.

    SQLAlchemy twin of :class:`LedgerWriter` (same statements, same rules): used to isolate a
    poison event one by one, and by tests and tools.
    """
    prep = _prepare(events)
    result = prep.result
    if not prep.orders and not prep.fills:
        return result
    with engine.begin() as conn:
        # Rows in key order, so concurrent writers lock in the same order (no deadlocks).
        # executemany form: SQLAlchemy's "insertmanyvalues" sends multi-row VALUES pages
        # from one cached compiled statement (compiling a 256-row VALUES each time cost
        # ~10x the database time).
        if prep.orders:
            conn.execute(_ORDER_UPSERT, prep.orders)
            conn.execute(_HISTORY_INSERT, prep.history)
        inserted = _insert_fills(conn, prep.fills) if prep.fills else []
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
    # The moment the row is written, not the transaction start (now()); the commit follows.
    .values(ingested_at=func.clock_timestamp())
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
    rows, updates = _fold_positions(states, fills, now)
    conn.execute(_POSITION_UPSERT, rows)
    return updates


def _fold_positions(
    states: dict[PosKey, PositionState], fills: list[dict[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], list[PositionUpdate]]:
    """Apply ``fills`` to the locked ``states``: the upsert rows and the updates."""
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
    return rows, [PositionUpdate(*k, states[k], now) for k in states]


_SCALE = Decimal("1e-18")


def quantize_state(s: PositionState) -> PositionState:
    """Round to NUMERIC(38,18), so memory, Redis and the database hold the same numbers."""
    return PositionState(*(v.quantize(_SCALE) for v in
                           (s.quantity, s.avg_price, s.realized_pnl, s.fees)))


# ---------------------------------------------------------------- async writer (hot path)

_DIALECT = pg_psycopg.dialect()  # type: ignore[no-untyped-call]


class _Sql:
    """A SQLAlchemy statement compiled once to psycopg SQL text (same SQL, no per-call work)."""

    def __init__(self, stmt: Any, keys: Sequence[str]) -> None:
        compiled = stmt.compile(dialect=_DIALECT, column_keys=list(keys))
        self.text: str = str(compiled)
        self.defaults = {k: v for k, v in compiled.params.items() if k not in keys}

    def params(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**self.defaults, **r} for r in rows] if self.defaults else rows


_ORDER_KEYS = ("mode", "session", "venue", "symbol", "client_order_id", "venue_order_id", "side",
               "quantity", "filled_quantity", "avg_price", "status", "intent_id", "trade_id",
               "reason", "created_at", "updated_at")
_HISTORY_KEYS = ("mode", "session", "venue", "client_order_id", "status", "filled_quantity",
                 "reason", "msg_id", "ts")
_FILL_KEYS = ("mode", "session", "venue", "symbol", "client_order_id", "venue_order_id",
              "venue_trade_id", "side", "quantity", "price", "fee", "fee_asset", "ts",
              "intent_id", "trade_id")
_POS_KEYS = ("mode", "session", "venue", "symbol", "quantity", "avg_price", "realized_pnl",
             "fees", "updated_at")
_SQL_ORDER = _Sql(_ORDER_UPSERT, _ORDER_KEYS)
_SQL_HISTORY = _Sql(_HISTORY_INSERT, _HISTORY_KEYS)
_SQL_FILL = _Sql(_FILL_INSERT, _FILL_KEYS)
_SQL_POS_BLANK = _Sql(_POSITION_BLANK, ("mode", "session", "venue", "symbol", "updated_at"))
_SQL_POS_UPSERT = _Sql(_POSITION_UPSERT, _POS_KEYS)
_SQL_POS_LOCK = (
    "SELECT mode, session, venue, symbol, quantity, avg_price, realized_pnl, fees "
    "FROM positions WHERE (mode, session, venue, symbol) IN "
    "(SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])) "
    "ORDER BY mode, session, venue, symbol FOR UPDATE"
)


def psycopg_conninfo(url: str) -> str:
    """SQLAlchemy URL (any postgres driver) -> libpq connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class LedgerWriter:
    """:func:`ingest_batch` on one dedicated async psycopg connection in pipeline mode.

    Same statements and rules as the SQLAlchemy path, but no worker thread and two network
    round trips per batch instead of one per statement: (1) order upsert, history, fill
    insert ... RETURNING, position blank rows and ``SELECT ... FOR UPDATE`` are sent together;
    (2) the position upsert and the COMMIT. The caller acks only after :meth:`ingest`
    returned, i.e. after the commit.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.conninfo = psycopg_conninfo(url)
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo, connect_timeout=int(self.connect_timeout), prepare_threshold=1)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def ingest(self, events: Sequence[tuple[Envelope, Any]]) -> IngestResult:
        prep = _prepare(events)
        result = prep.result
        if not prep.orders and not prep.fills:
            return result
        conn = await self._connection()
        try:
            inserted, updates = await self._write(conn, prep)
        except BaseException:
            if conn.broken or conn.closed:
                self._conn = None
            raise
        result.fills_inserted = len(inserted)
        result.positions = updates
        return result

    async def _write(
        self, conn: psycopg.AsyncConnection[Any], prep: _Prepared
    ) -> tuple[list[dict[str, Any]], list[PositionUpdate]]:
        now = datetime.now(UTC)
        keys = sorted({(f["mode"], f["session"], f["venue"], f["symbol"]) for f in prep.fills})
        async with conn.pipeline(), conn.transaction():
            cur = conn.cursor()
            if prep.orders:
                await cur.executemany(_SQL_ORDER.text, _SQL_ORDER.params(prep.orders))
                await cur.executemany(_SQL_HISTORY.text, _SQL_HISTORY.params(prep.history))
            if not prep.fills:
                return [], []
            fcur = conn.cursor()
            await fcur.executemany(_SQL_FILL.text, _SQL_FILL.params(prep.fills), returning=True)
            # Lock every position the batch may move (a duplicate fill's row exists already).
            blank = [dict(zip(("mode", "session", "venue", "symbol"), k, strict=True))
                     | {"updated_at": now} for k in keys]
            await cur.executemany(_SQL_POS_BLANK.text, _SQL_POS_BLANK.params(blank))
            lcur = conn.cursor()
            await lcur.execute(_SQL_POS_LOCK, [list(col) for col in zip(*keys, strict=True)])
            new: set[tuple[str, str, str]] = set()
            while True:  # one result set per fill row (empty when it was a duplicate)
                for r in await fcur.fetchall():
                    new.add((r[0], r[1], r[2]))
                if not fcur.nextset():
                    break
            inserted = [f for f in prep.fills
                        if (f["mode"], f["venue"], f["venue_trade_id"]) in new]
            if not inserted:
                return [], []
            moved = {(f["mode"], f["session"], f["venue"], f["symbol"]) for f in inserted}
            states: dict[PosKey, PositionState] = {
                (r[0], r[1], r[2], r[3]): PositionState(r[4], r[5], r[6], r[7])
                for r in await lcur.fetchall() if (r[0], r[1], r[2], r[3]) in moved
            }
            rows, updates = _fold_positions(states, inserted, now)
            await cur.executemany(_SQL_POS_UPSERT.text, _SQL_POS_UPSERT.params(rows))
        return inserted, updates

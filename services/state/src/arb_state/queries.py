"""Read side of the ledger: filtered lists with keyset pagination, sync status, slippage report.

Lists are newest first (``ts``/``created_at``/``started_at`` then ``id`` descending);
positions are in key order. The cursor is an opaque URL-safe string holding the sort key of
the last item returned, so pages never overlap or skip, even while rows are being added.
``fills`` and ``orders`` are partitioned by month with a composite primary key; ``id`` still
comes from one sequence, so (time, id) stays a total order for their cursors.

Round trips and the summary live in :mod:`arb_state.stats`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select, tuple_, union_all
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.engine import Engine

from arb_common.ledger import (
    Balance,
    DiscrepancyRow,
    EquityHistory,
    Fill,
    Order,
    Position,
    ReconRun,
    SessionRow,
    SlippageAnalysis,
)
from arb_common.money import BPS, to_str
from arb_common.positions import PositionState

from .ingest import PositionUpdate


class CursorError(ValueError):
    """The cursor is not one this API produced."""


@dataclass(frozen=True)
class ListFilter:
    session: str | None = None
    mode: str | None = None
    symbol: str | None = None
    venue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    cursor: str | None = None


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, types: Sequence[type]) -> list[Any]:
    """Parse a cursor of ``kind`` whose key parts have ``types``; :class:`CursorError` if not."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CursorError("not a cursor") from exc
    if not isinstance(data, list) or len(data) != len(types) + 1 or data[0] != kind:
        raise CursorError(f"not a {kind} cursor")
    out: list[Any] = []
    for value, typ in zip(data[1:], types, strict=True):
        if typ is datetime:
            if not isinstance(value, str):
                raise CursorError("bad time in cursor")
            try:
                out.append(datetime.fromisoformat(value))
            except ValueError as exc:
                raise CursorError("bad time in cursor") from exc
        elif not isinstance(value, typ) or isinstance(value, bool):
            raise CursorError("bad key in cursor")
        else:
            out.append(value)
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return to_str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def row_dict(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    return {c: jsonable(getattr(row, c)) for c in columns}


def scope(model: Any, mode: str | None, session: str | None) -> list[ColumnElement[bool]]:
    """``mode`` / ``session`` conditions on ``model`` (None = any)."""
    conds: list[ColumnElement[bool]] = []
    if mode is not None:
        conds.append(model.mode == mode)
    if session is not None:
        conds.append(model.session == session)
    return conds


def _filters(f: ListFilter, model: Any, ts_col: Any) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    for name in ("session", "mode", "symbol", "venue"):
        value = getattr(f, name)
        is_session_id = name == "session" and model is SessionRow
        col = model.id if is_session_id else getattr(model, name, None)
        if value is not None and col is not None:
            conds.append(col == value)
    if f.since is not None:
        conds.append(ts_col >= f.since)
    if f.until is not None:
        conds.append(ts_col < f.until)
    return conds


def _page(
    engine: Engine, stmt: Select[Any], f: ListFilter, kind: str,
    columns: Sequence[str], key_of: Callable[[Any], Sequence[Any]],
) -> dict[str, Any]:  # fmt: skip
    with engine.connect() as conn:
        rows = (conn.execute(stmt.limit(f.limit + 1))).all()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    items = [row_dict(r, columns) for r in rows]
    nxt = encode_cursor(kind, key_of(rows[-1])) if more and rows else None
    return {"items": items, "next": nxt}


FILL_COLUMNS = (
    "venue", "symbol", "client_order_id", "venue_trade_id", "side", "quantity", "price", "fee",
    "fee_asset", "ts", "venue_order_id", "intent_id", "trade_id", "mode", "session",
)  # fmt: skip
ORDER_COLUMNS = (
    "venue", "symbol", "client_order_id", "venue_order_id", "side", "quantity",
    "filled_quantity", "status", "avg_price", "intent_id", "trade_id", "reason", "created_at",
    "updated_at", "mode", "session",
)  # fmt: skip
POSITION_COLUMNS = (
    "mode", "session", "venue", "symbol", "quantity", "avg_price", "realized_pnl", "fees",
    "updated_at",
)  # fmt: skip
SESSION_COLUMNS = ("id", "mode", "started_at", "stopped_at", "status")
EQUITY_COLUMNS = ("mode", "session", "ts", "equity", "realized", "unrealized")
SLIPPAGE_COLUMNS = (
    "mode", "session", "venue", "symbol", "side", "client_order_id", "venue_trade_id",
    "intent_id", "trade_id", "quantity", "expected_price", "realized_price", "slippage_bps",
    "slippage_quote", "ts",
)  # fmt: skip


def _time_conds(f: ListFilter, model: Any, ts_col: Any, kind: str) -> list[ColumnElement[bool]]:
    """Filters plus the keyset condition of a newest-first (``ts_col``, ``id``) order."""
    conds = _filters(f, model, ts_col)
    id_type: type = str if model is SessionRow else int
    if f.cursor:
        ts, ident = decode_cursor(kind, f.cursor, (datetime, id_type))
        conds.append(tuple_(ts_col, model.id) < tuple_(ts, ident))
    return conds


def _time_page(
    engine: Engine, f: ListFilter, model: Any, ts_col: Any, kind: str,
    columns: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """Newest-first page over ``model`` keyed by (``ts_col``, ``id``)."""
    conds = _time_conds(f, model, ts_col, kind)
    stmt = select(model).where(and_(True, *conds)).order_by(ts_col.desc(), model.id.desc())
    ts_name = ts_col.key
    return _page(engine, stmt, f, kind, columns,
                 lambda r: (getattr(r, ts_name).isoformat(), r.id))  # fmt: skip


def list_fills(engine: Engine, f: ListFilter) -> dict[str, Any]:
    return _time_page(engine, f, Fill, Fill.ts, "fill", FILL_COLUMNS)


def list_orders(engine: Engine, f: ListFilter) -> dict[str, Any]:
    return _time_page(engine, f, Order, Order.created_at, "order", ORDER_COLUMNS)


def list_sessions(engine: Engine, f: ListFilter) -> dict[str, Any]:
    return _time_page(engine, f, SessionRow, SessionRow.started_at, "session", SESSION_COLUMNS)


def list_equity(engine: Engine, f: ListFilter) -> dict[str, Any]:
    """Equity history rows (one per session per ``equity_interval_s``), newest first."""
    return _time_page(engine, f, EquityHistory, EquityHistory.ts, "equity", EQUITY_COLUMNS)


def list_positions(engine: Engine, f: ListFilter) -> dict[str, Any]:
    p = Position
    key_cols = (p.mode, p.session, p.venue, p.symbol)
    conds = _filters(f, p, p.updated_at)
    if f.cursor:
        key = decode_cursor("position", f.cursor, (str, str, str, str))
        conds.append(tuple_(*key_cols) > tuple_(*key))
    stmt = select(p).where(and_(True, *conds)).order_by(*key_cols)
    return _page(engine, stmt, f, "position", POSITION_COLUMNS,
                 lambda r: (r.mode, r.session, r.venue, r.symbol))  # fmt: skip


BALANCE_COLUMNS = ("mode", "session", "venue", "asset", "free", "locked", "source", "ts")


def list_balances(engine: Engine, f: ListFilter, asset: str | None = None) -> dict[str, Any]:
    """Balances per (mode, session, venue, asset), in key order: the paper and shadow
    accounts the ledger keeps (source ``ledger``, one row each) and, for ``live``, each venue
    account's latest observation (source ``venue``, session ``''``). A row is one account of
    one mode: paper and live balances are never summed or merged."""
    b = Balance
    conds = _filters(replace(f, symbol=None, since=None, until=None), b, b.ts)
    if asset is not None:
        conds.append(b.asset == asset)
    cols = (b.mode, b.session, b.venue, b.asset, b.free, b.locked, b.source, b.ts)
    latest = (
        select(*cols).where(b.source == "venue", *conds)
        .ext(distinct_on(b.mode, b.session, b.venue, b.asset))
        .order_by(b.mode, b.session, b.venue, b.asset, b.ts.desc(), b.id.desc())
        .subquery("latest")
    )  # fmt: skip
    ledger = select(*cols).where(b.source == "ledger", *conds)
    rows = union_all(select(*latest.c), ledger).subquery("balances")
    key = (rows.c.mode, rows.c.session, rows.c.venue, rows.c.asset)
    stmt = select(rows)
    if f.cursor:
        stmt = stmt.where(tuple_(*key) > tuple_(*decode_cursor("balance", f.cursor,
                                                               (str, str, str, str))))
    return _page(engine, stmt.order_by(*key), f, "balance", BALANCE_COLUMNS,
                 lambda r: (r.mode, r.session, r.venue, r.asset))


def load_positions(engine: Engine, sessions: set[tuple[str, str]]) -> list[PositionUpdate]:
    """Every position of the given (mode, session) pairs (for the Redis re-sync)."""
    if not sessions:
        return []
    p = Position
    stmt = select(p).where(tuple_(p.mode, p.session).in_(sorted(sessions)))
    with engine.connect() as conn:
        rows = (conn.execute(stmt)).all()
    return [
        PositionUpdate(r.mode, r.session, r.venue, r.symbol,
                       PositionState(r.quantity, r.avg_price, r.realized_pnl, r.fees),
                       r.updated_at)
        for r in rows
    ]  # fmt: skip


# ------------------------------------------------------------------ slippage


def _bps4(value: Decimal | float | None) -> str | None:
    """A bps statistic to 4 decimals (a 10^-8 relative difference is below any tick)."""
    if value is None:
        return None
    return to_str(Decimal(f"{value:.4f}") if isinstance(value, float) else round(value, 4))


def slippage_report(engine: Engine, f: ListFilter) -> dict[str, Any]:
    """Per-fill expected vs realized (a page, newest first) and per (symbol, venue, side)
    aggregates over every row the filters select (not just this page).

    ``mean_bps`` / ``median_bps`` / ``p95_bps`` are per fill (unweighted);
    ``weighted_bps`` is ``total_quote`` over the expected notional (quantity-weighted).
    """
    page = _time_page(engine, f, SlippageAnalysis, SlippageAnalysis.ts, "slippage",
                      SLIPPAGE_COLUMNS)  # fmt: skip
    sa = SlippageAnalysis
    bps = sa.slippage_bps
    stmt = (
        select(
            sa.symbol, sa.venue, sa.side, func.count().label("count"),
            func.avg(bps).label("mean"),
            func.percentile_cont(0.5).within_group(bps).label("median"),
            func.percentile_cont(0.95).within_group(bps).label("p95"),
            func.sum(sa.slippage_quote).label("total_quote"),
            func.sum(sa.quantity * sa.expected_price).label("expected_notional"),
        )
        .where(and_(True, *_filters(replace(f, cursor=None), sa, sa.ts)))
        .group_by(sa.symbol, sa.venue, sa.side)
        .order_by(sa.symbol, sa.venue, sa.side)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    page["aggregates"] = [
        {"symbol": r.symbol, "venue": r.venue, "side": r.side, "count": r.count,
         "mean_bps": _bps4(r.mean), "median_bps": _bps4(r.median), "p95_bps": _bps4(r.p95),
         "weighted_bps": _bps4(r.total_quote / r.expected_notional * BPS
                               if r.expected_notional else None),
         "total_quote": to_str(r.total_quote)}
        for r in rows
    ]  # fmt: skip
    return page


# ------------------------------------------------------------------ reconciliation


def sync_status(engine: Engine, venue: str | None = None) -> dict[str, Any]:
    """The last reconciliation run of each venue with every discrepancy it found."""
    r, d = ReconRun, DiscrepancyRow
    runs_stmt = (
        select(r.venue, r.run_id, r.started_at, r.duration_ms, r.ok, r.error)
        .where(and_(True, *([r.venue == venue] if venue is not None else [])))
        .ext(distinct_on(r.venue)).order_by(r.venue, r.started_at.desc(), r.id.desc())
    )  # fmt: skip
    with engine.connect() as conn:
        runs = conn.execute(runs_stmt).all()
        found: dict[tuple[str, str], list[dict[str, Any]]] = {(x.venue, x.run_id): [] for x in runs}
        if found:
            disc_stmt = (
                select(d.venue, d.run_id, d.kind, d.detail, d.resolution, d.client_order_id, d.ts)
                .where(tuple_(d.venue, d.run_id).in_(sorted(found)))
                .order_by(d.venue, d.ts, d.id)
            )  # fmt: skip
            for x in conn.execute(disc_stmt):
                found[(x.venue, x.run_id)].append(row_dict(
                    x, ("kind", "detail", "resolution", "client_order_id", "ts")))
    venues = [
        {"venue": x.venue, "run_id": x.run_id, "started_at": x.started_at.isoformat(),
         "duration_ms": x.duration_ms, "ok": x.ok, "error": x.error,
         "discrepancies": found[(x.venue, x.run_id)]}
        for x in runs
    ]  # fmt: skip
    return {"ok": bool(venues) and all(v["ok"] for v in venues), "venues": venues}

"""Read side of the ledger: filtered lists with keyset pagination, the summary, re-sync loads.

Lists are newest first (``ts``/``created_at``/``started_at`` then ``id`` descending);
positions are in key order. The cursor is an opaque URL-safe string holding the sort key of
the last item returned, so pages never overlap or skip, even while rows are being added.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select, tuple_
from sqlalchemy.engine import Engine

from arb_common.ledger import Fill, Order, Position, SessionRow
from arb_common.money import to_str
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return to_str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _row_dict(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    return {c: _jsonable(getattr(row, c)) for c in columns}


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
    columns: Sequence[str], key_of: Any,
) -> dict[str, Any]:  # fmt: skip
    with engine.connect() as conn:
        rows = (conn.execute(stmt.limit(f.limit + 1))).all()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    items = [_row_dict(r, columns) for r in rows]
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


def _time_page(
    engine: Engine, f: ListFilter, model: Any, ts_col: Any, kind: str,
    columns: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """Newest-first page over ``model`` keyed by (``ts_col``, ``id``)."""
    conds = _filters(f, model, ts_col)
    id_type: type = str if model is SessionRow else int
    if f.cursor:
        ts, ident = decode_cursor(kind, f.cursor, (datetime, id_type))
        conds.append(tuple_(ts_col, model.id) < tuple_(ts, ident))
    stmt = select(model).where(and_(True, *conds)).order_by(ts_col.desc(), model.id.desc())
    ts_name = ts_col.key
    return _page(engine, stmt, f, kind, columns,
                       lambda r: (getattr(r, ts_name).isoformat(), r.id))


def list_fills(engine: Engine, f: ListFilter) -> dict[str, Any]:
    return _time_page(engine, f, Fill, Fill.ts, "fill", FILL_COLUMNS)


def list_orders(engine: Engine, f: ListFilter) -> dict[str, Any]:
    return _time_page(engine, f, Order, Order.created_at, "order", ORDER_COLUMNS)


def list_sessions(engine: Engine, f: ListFilter) -> dict[str, Any]:
    return _time_page(engine, f, SessionRow, SessionRow.started_at, "session",
                            SESSION_COLUMNS)


def list_positions(engine: Engine, f: ListFilter) -> dict[str, Any]:
    p = Position
    key_cols = (p.mode, p.session, p.venue, p.symbol)
    conds = _filters(f, p, p.updated_at)
    if f.cursor:
        key = decode_cursor("position", f.cursor, (str, str, str, str))
        conds.append(tuple_(*key_cols) > tuple_(*key))
    stmt = select(p).where(and_(True, *conds)).order_by(*key_cols)
    return _page(engine, stmt, f, "position", POSITION_COLUMNS,
                       lambda r: (r.mode, r.session, r.venue, r.symbol))


def load_positions(
    engine: Engine, sessions: set[tuple[str, str]]
) -> list[PositionUpdate]:
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


# ------------------------------------------------------------------ summary


def _scope(model: Any, mode: str | None, session: str | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if mode is not None:
        conds.append(model.mode == mode)
    if session is not None:
        conds.append(model.session == session)
    return conds


def _blank() -> dict[str, Any]:
    return {"realized_pnl": Decimal(0), "fees": Decimal(0), "fees_by_asset": defaultdict(Decimal),
            "open_quantity": Decimal(0), "trades": 0, "wins": 0, "open_trades": 0}


def summary(engine: Engine, mode: str | None, session: str | None) -> dict[str, Any]:
    """Realized PnL (positions), fees and closed round trips (fills grouped by trade_id).

    A trade is closed when every venue's net base quantity for its trade_id is 0 and it has
    fills from its ``:close`` intent; its PnL is sell proceeds - buy cost - fees (quote).
    """
    per: dict[str, dict[str, Any]] = defaultdict(_blank)
    p, f = Position, Fill
    signed = case((f.side == "buy", f.quantity), else_=-f.quantity)
    cash = case((f.side == "sell", f.quantity * f.price), else_=-f.quantity * f.price)
    asset = func.upper(f.fee_asset)
    # Fee in the quote asset, valued like arb_common.positions.fee_in_quote (others: 0).
    fee_q = case(
        (asset == func.split_part(f.symbol, "-", 2), f.fee),
        (asset == func.split_part(f.symbol, "-", 1), f.fee * f.price),
        else_=0,
    )
    pos_stmt = (
        select(p.symbol, func.sum(p.realized_pnl), func.sum(p.quantity))
        .where(and_(True, *_scope(p, mode, session))).group_by(p.symbol)
    )
    fee_stmt = (
        select(f.symbol, f.fee_asset, func.sum(f.fee), func.sum(fee_q))
        .where(and_(True, *_scope(f, mode, session))).group_by(f.symbol, f.fee_asset)
    )
    trade_stmt = (
        select(f.mode, f.session, f.trade_id, f.symbol, f.venue, func.sum(signed), func.sum(cash),
               func.sum(fee_q), func.bool_or(f.intent_id.like("%:close")))
        .where(and_(f.trade_id != "", *_scope(f, mode, session)))
        .group_by(f.mode, f.session, f.trade_id, f.symbol, f.venue)
    )  # fmt: skip
    with engine.connect() as conn:
        for symbol, realized, qty in conn.execute(pos_stmt):
            per[symbol]["realized_pnl"] += realized
            per[symbol]["open_quantity"] += qty
        for symbol, fee_asset, fee, fee_value in conn.execute(fee_stmt):
            per[symbol]["fees_by_asset"][fee_asset] += fee
            per[symbol]["fees"] += fee_value
        trade_rows = (conn.execute(trade_stmt)).all()
    _count_trades(per, trade_rows)
    return _summary_json(per, mode, session)


def _count_trades(per: dict[str, dict[str, Any]], rows: Sequence[Any]) -> None:
    trades: dict[tuple[str, str, str], dict[str, Any]] = {}
    for mode, session, trade_id, symbol, _venue, net, cash, fees, closing in rows:
        t = trades.setdefault((mode, session, trade_id),
                              {"symbol": symbol, "flat": True, "pnl": Decimal(0), "close": False})
        t["flat"] = t["flat"] and net == 0
        t["pnl"] += cash - fees
        t["close"] = t["close"] or bool(closing)
    for t in trades.values():
        stats = per[t["symbol"]]
        if t["flat"] and t["close"]:
            stats["trades"] += 1
            stats["wins"] += 1 if t["pnl"] > 0 else 0
        else:
            stats["open_trades"] += 1


def _summary_json(per: dict[str, dict[str, Any]], mode: str | None, session: str | None
                  ) -> dict[str, Any]:
    total = _blank()
    symbols: dict[str, Any] = {}
    for symbol in sorted(per):
        s = per[symbol]
        for k in ("realized_pnl", "fees", "open_quantity", "trades", "wins", "open_trades"):
            total[k] += s[k]
        for asset, amount in s["fees_by_asset"].items():
            total["fees_by_asset"][asset] += amount
        symbols[symbol] = _stats_json(s)
    return {"mode": mode or "all", "session": session or "all", "symbols": symbols,
            "total": _stats_json(total)}


def _stats_json(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "realized_pnl": to_str(s["realized_pnl"]),
        "fees": to_str(s["fees"]),
        "fees_by_asset": {a: to_str(v) for a, v in sorted(s["fees_by_asset"].items())},
        "open_quantity": to_str(s["open_quantity"]),
        "trades": s["trades"],
        "wins": s["wins"],
        "winrate": round(s["wins"] / s["trades"], 4) if s["trades"] else None,
        "open_trades": s["open_trades"],
    }

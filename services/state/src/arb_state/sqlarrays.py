"""PostgreSQL array literals for set-based statements: one ``%s::<type>[]`` parameter per
column, expanded with ``unnest`` (the ledger writers' statements, :mod:`arb_state.ingest`).

A column's SQL type comes from :data:`COLUMN_TYPES` by name (every other column is text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

COLUMN_TYPES = {
    "quantity": "numeric", "filled_quantity": "numeric", "avg_price": "numeric",
    "price": "numeric", "fee": "numeric", "realized_pnl": "numeric", "fees": "numeric",
    "free": "numeric", "created_at": "timestamptz", "updated_at": "timestamptz",
    "ts": "timestamptz", "stream_seq": "bigint",
}  # fmt: skip; every other column is text


def unnest(cols: Sequence[str]) -> str:
    arrays = ", ".join(f"%s::{COLUMN_TYPES.get(c, 'text')}[]" for c in cols)
    return f"unnest({arrays}) AS i({', '.join(cols)})"


def text_array(values: Iterable[str | None]) -> str:
    vals = list(values)
    if not vals:
        return "{}"
    if None not in vals:
        # Escaped all at once, NUL marking the gaps (it cannot occur in PostgreSQL text; a
        # value holding one takes the slow path below, and PostgreSQL refuses it).
        joined = "\x00".join(cast(list[str], vals))
        if joined.count("\x00") == len(vals) - 1:
            return '{"' + _escape(joined).replace("\x00", '","') + '"}'
    return "{" + ",".join("NULL" if v is None else _quote(v) for v in vals) + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def _quote(v: str) -> str:
    return '"' + _escape(v) + '"'


def _plain_array(values: Iterable[Any]) -> str:
    """Numbers (``str(Decimal)``, exponent notation included, is valid numeric input)."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _time_array(values: Iterable[datetime]) -> str:
    return "{" + ",".join(v.isoformat() for v in values) + "}"


def _array(rows: Sequence[dict[str, Any]], col: str) -> str:
    kind = COLUMN_TYPES.get(col, "text")
    if kind == "text":
        return text_array(r[col] for r in rows)
    if kind == "timestamptz":
        return _time_array(r[col] for r in rows)
    return _plain_array(r[col] for r in rows)


def arrays(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> tuple[str, ...]:
    """One PostgreSQL array literal per column, cast in SQL (``%s::numeric[]``).

    Built here rather than by psycopg's list adapter: its per-element Python dumping was
    ~45% of the writer's CPU; a literal is one string per column (every text element quoted
    and escaped, so any content round-trips exactly).
    """
    return tuple(_array(rows, c) for c in cols)

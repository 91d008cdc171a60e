"""Paper and shadow accounts in the ledger: ``balances`` rows with source ``ledger``.

One row per (mode, session, venue, asset), kept by the ledger writer (:mod:`arb_state.ingest`)
from EXEC the way the executor's paper venues fold it (``arb_executor.paper_state``): a
:class:`~arb_common.messages.BalanceSnapshot` sets the account, then every fill inserted
after it (deduplicated by its venue trade id) moves it. Each row keeps ``stream_seq``, the
EXEC sequence of the last event applied to it, so a batch delivered again after its commit
(ack lost) changes nothing: a snapshot is applied only when no row of its account is at or
past it, a fill's effect only past its row's sequence.

Live accounts are never kept here: their truth is the venue's (source ``venue`` rows, the
reconciler's reads, ``mode='live'``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from arb_common.messages import BalanceSnapshot

from .sqlarrays import unnest

PAPER_MODES = ("paper", "shadow")  # the modes whose accounts the ledger keeps
BALANCE_COLS = ("mode", "session", "venue", "asset", "free", "stream_seq", "ts")


def balance_rows(mode: str, session: str, ev: BalanceSnapshot, seq: int | None,
                 ts: datetime) -> list[dict[str, Any]]:
    """One row per asset (an empty snapshot: one row, asset and free NULL: every asset 0)."""
    items: list[tuple[str | None, Decimal | None]] = [*sorted(ev.balances.items())]
    return [{"mode": mode, "session": session, "venue": ev.venue, "asset": asset, "free": free,
             "stream_seq": seq, "ts": ts} for asset, free in items or [(None, None)]]


# The accounts moved by the fills inserted (CTEs ``i``: the batch's fills, ``k``: the new fill
# keys, of ``arb_state.ingest.SQL_FILLS``): per fill its base, its quote and its fee (in the
# fee's asset; the quote when none is named), as ``arb_executor.paper`` books them; only for
# accounts the ledger knows (a snapshot came: the start balances are the executor's), and
# only past each row's ``stream_seq``. Rows locked in key order.
SQL_FILL_EFFECTS = (
    "e AS (SELECT i.mode, i.session, i.venue, x.asset, sum(x.amount) AS amount, "
    "max(i.stream_seq) AS stream_seq, max(i.ts) AS ts "
    "FROM i JOIN k USING (mode, venue, venue_trade_id) CROSS JOIN LATERAL (VALUES "
    "(split_part(i.symbol, '-', 1), "
    "CASE WHEN i.side = 'buy' THEN i.quantity ELSE -i.quantity END), "
    "(split_part(i.symbol, '-', 2), "
    "CASE WHEN i.side = 'buy' THEN -(i.quantity * i.price) ELSE i.quantity * i.price END), "
    "(coalesce(nullif(i.fee_asset, ''), split_part(i.symbol, '-', 2)), -i.fee)"
    ") AS x (asset, amount) "
    "LEFT JOIN balances c ON c.source = 'ledger' AND c.mode = i.mode "
    "AND c.session = i.session AND c.venue = i.venue AND c.asset = x.asset "
    f"WHERE i.mode IN {PAPER_MODES!r} AND EXISTS (SELECT 1 FROM balances a WHERE "
    "a.source = 'ledger' AND a.mode = i.mode AND a.session = i.session AND a.venue = i.venue) "
    "AND (c.stream_seq IS NULL OR i.stream_seq IS NULL OR i.stream_seq > c.stream_seq) "
    "GROUP BY i.mode, i.session, i.venue, x.asset), "
    "moved AS (INSERT INTO balances AS b "
    "(mode, session, venue, asset, free, source, stream_seq, ts) "
    "SELECT mode, session, venue, asset, amount, 'ledger', stream_seq, ts FROM e "
    "ORDER BY mode, session, venue, asset "
    "ON CONFLICT (mode, session, venue, asset) WHERE source = 'ledger' DO UPDATE SET "
    "free = b.free + excluded.free, stream_seq = greatest(b.stream_seq, excluded.stream_seq), "
    "ts = greatest(b.ts, excluded.ts)) "
)


def with_fill_effects(sql_fills: str) -> str:
    """``sql_fills`` (the fills statement) also moving the accounts (:data:`SQL_FILL_EFFECTS`
    as two more CTEs after ``k``)."""
    anchor = "ON CONFLICT DO NOTHING RETURNING mode, venue, venue_trade_id) "
    if sql_fills.count(anchor) != 1:
        raise ValueError("fills statement without its fill keys CTE")
    return sql_fills.replace(anchor, anchor[:-1] + ", " + SQL_FILL_EFFECTS)


# Balance snapshots: set each account (an asset it lacks: 0; an empty snapshot is one row with
# a NULL asset) unless a row of it is at or past the snapshot's sequence already. Runs before
# the batch's fills, whose effects then go on top of it, past it only.
SQL_BALANCE_SNAPSHOTS = (
    "WITH s AS (SELECT * FROM " + unnest(BALANCE_COLS) + "), "
    "a AS (SELECT DISTINCT mode, session, venue, stream_seq, ts FROM s), "
    "ok AS (SELECT * FROM a WHERE a.stream_seq IS NULL OR NOT EXISTS (SELECT 1 FROM balances c "
    "WHERE c.source = 'ledger' AND c.mode = a.mode AND c.session = a.session "
    "AND c.venue = a.venue AND c.stream_seq >= a.stream_seq)), "
    "x AS (SELECT mode, session, venue, asset FROM s WHERE asset IS NOT NULL "
    "UNION SELECT c.mode, c.session, c.venue, "
    "c.asset FROM balances c JOIN ok ON c.mode = ok.mode AND c.session = ok.session "
    "AND c.venue = ok.venue WHERE c.source = 'ledger') "
    "INSERT INTO balances AS b (mode, session, venue, asset, free, source, stream_seq, ts) "
    "SELECT x.mode, x.session, x.venue, x.asset, coalesce(s.free, 0), 'ledger', ok.stream_seq, "
    "ok.ts FROM x JOIN ok ON x.mode = ok.mode AND x.session = ok.session AND x.venue = ok.venue "
    "LEFT JOIN s ON s.mode = x.mode AND s.session = x.session AND s.venue = x.venue "
    "AND s.asset = x.asset ORDER BY x.mode, x.session, x.venue, x.asset "
    "ON CONFLICT (mode, session, venue, asset) WHERE source = 'ledger' DO UPDATE SET "
    "free = excluded.free, stream_seq = excluded.stream_seq, ts = excluded.ts"
)

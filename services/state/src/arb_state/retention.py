"""Snapshot retention: what the ledger forgets (snapshots only; orders, fills and positions
are never pruned).

- A **stopped** session's snapshots taken before ``now - retention_days`` are deleted by
  :func:`prune` (run periodically by :func:`retention_loop`), except each
  (mode, session, component)'s newest ``keep`` (at least 3: enough to fall back past a
  corrupt latest one when that session is resumed).
- A **running** session is capped by :func:`prune_running` when a snapshot is saved: its
  newest ``keep_running`` are kept (never fewer than ``keep``).

Child rows (``position_snapshots``, ``metrics_snapshots``, ``risk_guard_snapshots``) go with
their snapshot (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from prometheus_client import Counter
from sqlalchemy import Table, and_, delete, func, select
from sqlalchemy.engine import Connection, Engine

from arb_common.ledger import (
    MetricsSnapshot,
    PositionSnapshot,
    RiskGuardSnapshot,
    SessionRow,
    SessionSnapshot,
)

logger = logging.getLogger(__name__)

PRUNED = Counter("arb_state_snapshots_pruned_total", "Snapshots deleted by retention",
                 ["why"])  # why: retention (stopped session, too old) / running_cap
PRUNE_ERRORS = Counter("arb_state_snapshot_prune_errors_total", "Retention runs that failed")

_SNAPS = cast(Table, SessionSnapshot.__table__)
_SESSIONS = cast(Table, SessionRow.__table__)
_CHILDREN: tuple[tuple[str, Table], ...] = (
    ("positions", cast(Table, PositionSnapshot.__table__)),
    ("metrics", cast(Table, MetricsSnapshot.__table__)),
    ("risk_guard", cast(Table, RiskGuardSnapshot.__table__)),
)


@dataclass
class PruneResult:
    snapshots: int = 0  # session_snapshots rows deleted
    sessions: int = 0  # distinct (mode, session, component) touched
    children: dict[str, int] = field(default_factory=dict)  # cascaded child rows, per table


def _rank() -> Any:
    """Newest first within each (mode, session, component)."""
    s = _SNAPS
    return func.row_number().over(
        partition_by=(s.c.mode, s.c.session, s.c.component),
        order_by=(s.c.taken_at.desc(), s.c.id.desc()),
    ).label("rank")


def _delete(conn: Connection, ids: list[str], why: str) -> PruneResult:
    """Delete these snapshots (and, by cascade, their children); count what went."""
    result = PruneResult(snapshots=0)
    if not ids:
        return result
    for name, table in _CHILDREN:
        result.children[name] = conn.execute(
            select(func.count()).select_from(table).where(table.c.snapshot_id.in_(ids))
        ).scalar_one()
    gone = conn.execute(
        delete(_SNAPS).where(_SNAPS.c.snapshot_id.in_(ids))
        .returning(_SNAPS.c.mode, _SNAPS.c.session, _SNAPS.c.component)
    ).all()  # fmt: skip
    result.snapshots = len(gone)
    result.sessions = len({tuple(r) for r in gone})
    PRUNED.labels(why).inc(result.snapshots)
    return result


def prune(engine: Engine, retention_days: float, keep: int, now: datetime) -> PruneResult:
    """Delete stopped sessions' snapshots taken before ``now - retention_days``, keeping each
    (mode, session, component)'s newest ``keep``; one transaction. Returns the counts."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    cutoff = now - timedelta(days=retention_days)
    s, ss = _SNAPS, _SESSIONS
    ranked = (
        select(s.c.snapshot_id, s.c.taken_at, _rank())
        .select_from(s.join(ss, and_(ss.c.id == s.c.session, ss.c.mode == s.c.mode)))
        .where(ss.c.status == "stopped")
        .subquery()
    )
    doomed = select(ranked.c.snapshot_id).where(ranked.c.rank > keep,
                                                ranked.c.taken_at < cutoff)
    with engine.begin() as conn:
        ids = list(conn.execute(doomed).scalars())
        result = _delete(conn, ids, "retention")
    if result.snapshots:
        logger.info("snapshots pruned snapshots=%d sessions=%d cutoff=%s children=%s",
                    result.snapshots, result.sessions, cutoff.isoformat(), result.children)
    return result


def prune_running(conn: Connection, mode: str, session: str, component: str,
                  keep_running: int, keep: int) -> int:
    """In the caller's transaction: keep this (mode, session, component)'s newest
    ``max(keep_running, keep)`` snapshots, delete the older ones; returns how many went."""
    limit = max(keep_running, keep)
    s = _SNAPS
    ranked = (
        select(s.c.snapshot_id, _rank())
        .where(s.c.mode == mode, s.c.session == session, s.c.component == component)
        .subquery()
    )
    ids = list(conn.execute(select(ranked.c.snapshot_id).where(ranked.c.rank > limit)).scalars())
    return _delete(conn, ids, "running_cap").snapshots


async def retention_loop(
    engine: Engine,
    *,
    retention_days: float,
    keep: int,
    interval_s: float,
    stopping: asyncio.Event,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run :func:`prune` now and every ``interval_s`` until ``stopping``; a failed run (the
    ledger down) is logged, counted and retried at the next interval, never fatal."""
    while not stopping.is_set():
        try:
            await asyncio.to_thread(prune, engine, retention_days, keep, now())
        except Exception as exc:  # noqa: BLE001 - the next run retries; never kill the service
            PRUNE_ERRORS.inc()
            logger.warning("snapshot retention failed, retrying in %.0fs error=%r",
                           interval_s, exc)
        try:
            await asyncio.wait_for(stopping.wait(), timeout=interval_s)
        except TimeoutError:
            pass

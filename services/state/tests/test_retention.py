"""Snapshot retention on real PostgreSQL: only stopped sessions, only old snapshots, always
the newest three kept, and never the ledger itself."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Engine
from test_snapshots import FILLS, SEC, Progress, make_doc, put_fills, rows_of

from arb_common.ledger import SessionRow
from arb_common.snapshots import to_wire
from arb_state.retention import prune, retention_loop
from arb_state.snapshots import SnapshotStore

NOW = datetime(2024, 6, 1, tzinfo=UTC)
DAY_NS = 86_400 * SEC


def ns(when: datetime) -> int:
    return int(when.timestamp()) * SEC


def add_session(engine: Engine, sid: str, status: str, mode: str = "paper") -> None:
    with engine.begin() as conn:
        conn.execute(insert(SessionRow).values(
            id=sid, mode=mode, started_at=NOW - timedelta(days=90), status=status,
            stopped_at=NOW - timedelta(days=45) if status == "stopped" else None))


async def add_snapshots(engine: Engine, session: str, ages_days: list[float],
                        mode: str = "paper") -> list[str]:
    """One snapshot per age (days before NOW), each with position/metrics/guard rows."""
    store = SnapshotStore(engine, Progress(), keep_running=1000)
    ids = []
    for age in ages_days:
        doc = make_doc(FILLS[:2], 2, session=session, mode=mode,
                       taken_ts=ns(NOW) - int(age * DAY_NS))
        reply = await store.save(to_wire(doc))
        assert reply["ok"], reply
        ids.append(doc.snapshot_id)
    return ids


def remaining(engine: Engine, session: str) -> list[str]:
    return [r.snapshot_id for r in rows_of(
        engine, f"SELECT snapshot_id FROM session_snapshots WHERE session = '{session}' "
                "ORDER BY taken_at DESC")]


def ledger_counts(engine: Engine) -> tuple[int, ...]:
    (row,) = rows_of(engine, "SELECT (SELECT count(*) FROM fills), (SELECT count(*) FROM "
                             "orders), (SELECT count(*) FROM positions)")
    return tuple(row)


async def test_retention_prunes_only_stopped_sessions_and_keeps_last_three(
    engine: Engine,
) -> None:
    add_session(engine, "old", "stopped")
    add_session(engine, "live-one", "running")
    put_fills(engine, FILLS, session="old")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO positions (mode, session, venue, symbol, quantity, "
                          "updated_at) VALUES ('paper', 'old', 'alpha', 'BTC-USDT', 1, now())"))
    ledger_before = ledger_counts(engine)
    stopped = await add_snapshots(engine, "old", [60, 50, 40, 35, 33, 31])
    running = await add_snapshots(engine, "live-one", [60, 50, 40, 35, 33, 31])

    result = prune(engine, retention_days=30, keep=3, now=NOW)

    assert remaining(engine, "old") == stopped[::-1][:3]  # the newest three, though old
    assert remaining(engine, "live-one") == running[::-1]  # a running session: untouched
    assert result.snapshots == 3 and result.sessions == 1
    assert result.children == {"positions": 6, "metrics": 6, "risk_guard": 3}
    (orphans,) = rows_of(engine, "SELECT count(*) FROM position_snapshots p WHERE NOT EXISTS "
                                 "(SELECT 1 FROM session_snapshots s "
                                 "WHERE s.snapshot_id = p.snapshot_id)")
    assert orphans[0] == 0
    assert ledger_counts(engine) == ledger_before  # the ledger is never pruned
    assert prune(engine, retention_days=30, keep=3, now=NOW).snapshots == 0  # idempotent


async def test_retention_keeps_recent_snapshots_of_stopped_sessions(engine: Engine) -> None:
    add_session(engine, "recent", "stopped")
    ids = await add_snapshots(engine, "recent", [45, 40, 20, 10, 5, 1])
    result = prune(engine, retention_days=30, keep=3, now=NOW)
    assert result.snapshots == 2
    assert remaining(engine, "recent") == ids[::-1][:4]  # 4 within 30 days, older ones gone


async def test_retention_keeps_each_mode_and_session_separately(engine: Engine) -> None:
    add_session(engine, "a", "stopped")
    add_session(engine, "b", "stopped", mode="live")
    a = await add_snapshots(engine, "a", [90, 80, 70, 60])
    b = await add_snapshots(engine, "b", [90, 80, 70, 60], mode="live")
    result = prune(engine, retention_days=30, keep=3, now=NOW)
    assert result.snapshots == 2 and result.sessions == 2
    assert remaining(engine, "a") == a[::-1][:3] and remaining(engine, "b") == b[::-1][:3]


def test_retention_refuses_to_keep_nothing(engine: Engine) -> None:
    with pytest.raises(ValueError, match="keep"):
        prune(engine, retention_days=30, keep=0, now=NOW)


async def test_retention_loop_prunes_now_and_survives_a_ledger_outage(
    engine: Engine, ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    add_session(engine, "old", "stopped")
    await add_snapshots(engine, "old", [90, 80, 70, 60])
    stopping = asyncio.Event()
    task = asyncio.create_task(retention_loop(
        engine, retention_days=30, keep=3, interval_s=0.05, stopping=stopping,
        now=lambda: NOW))
    for _ in range(100):
        if len(remaining(engine, "old")) == 3:
            break
        await asyncio.sleep(0.05)
    assert len(remaining(engine, "old")) == 3
    stopping.set()
    await asyncio.wait_for(task, 5)

    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                         connect_args={"connect_timeout": 1})
    stopping = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="arb_state.retention")
    task = asyncio.create_task(retention_loop(
        dead, retention_days=30, keep=3, interval_s=0.05, stopping=stopping))
    for _ in range(100):
        if sum("snapshot retention failed" in r.message for r in caplog.records) >= 2:
            break
        await asyncio.sleep(0.05)
    assert sum("snapshot retention failed" in r.message for r in caplog.records) >= 2
    assert not task.done()  # kept trying
    stopping.set()
    await asyncio.wait_for(task, 5)
    dead.dispose()

"""Operator actions on sessions: list them, and reset one mode.

``reset`` clears that mode's Redis namespace (``arb<prefix>:<mode>:*`` — never another mode's
keys) and closes its sessions in the ledger, so the next ``arbctl up --session-mode resume``
starts a new session. It refuses while a stack of that mode is running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis

from arb_common.keyspace import Keyspace
from arbctl import engines, session
from arbctl.stack import ENGINE_PORTS, read_state, running_supervisor


class SessionError(RuntimeError):
    """The action cannot be done; the message says why and what to do."""


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def ledger(home: Path, port_offset: int = 0) -> Iterator[str]:
    """A reachable ledger URL: ``ARB_DATABASE_URL``, the running stack's, or the dev stack's
    embedded PostgreSQL started just for this command (its data persists)."""
    url = os.environ.get("ARB_DATABASE_URL") or (read_state(home) or {}).get("urls", {}).get(
        "postgres")
    if url and (running_supervisor(home) or os.environ.get("ARB_DATABASE_URL")):
        yield url
        return
    data = home / "engines"
    if not (data / "postgres").is_dir():
        raise SessionError(f"no ledger yet under {data} (run `arbctl up` once, or set "
                           "ARB_DATABASE_URL)")
    eng = engines.start_postgres(data, ENGINE_PORTS["postgres"] + port_offset)
    try:
        yield eng.url
    finally:
        eng.stop()


def list_sessions(db_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(_conninfo(db_url)) as conn:
        rows = conn.execute(
            "SELECT id, mode, status, started_at, stopped_at FROM sessions "
            "ORDER BY started_at DESC").fetchall()
    return [{"id": r[0], "mode": r[1], "status": r[2],
             "started_at": r[3].isoformat() if r[3] else None,
             "stopped_at": r[4].isoformat() if r[4] else None} for r in rows]


def reset_mode(home: Path, mode: str, db_url: str, redis_url: str | None,
               bus_prefix: str = "") -> dict[str, Any]:
    """Clear ``mode``'s hot state and close its sessions; returns what was done."""
    if mode not in session.MODES:
        raise SessionError(f"mode must be one of {', '.join(session.MODES)}, got {mode!r}")
    state = read_state(home) or {}
    if running_supervisor(home) and state.get("mode") == mode:
        raise SessionError(f"a {mode} stack is running from {home}; `arbctl down` first")
    deleted = 0
    if redis_url:
        r = redis.Redis.from_url(redis_url)
        pattern = Keyspace(mode, "_", prefix="arb" + bus_prefix).mode_pattern()
        batch: list[bytes] = []
        for key in r.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(r.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(r.delete(*batch))
    with psycopg.connect(_conninfo(db_url)) as conn:
        closed = [row[0] for row in conn.execute(
            "UPDATE sessions SET status = 'closed', stopped_at = coalesce(stopped_at, now()) "
            "WHERE mode = %s AND status <> 'closed' RETURNING id", (mode,)).fetchall()]
    path = home / "session.json"
    if path.exists():
        data = json.loads(path.read_text() or "{}")
        if data.pop(mode, None) is not None:
            path.write_text(json.dumps(data, indent=2) + "\n")
    return {"mode": mode, "redis_keys_deleted": deleted, "sessions_closed": closed}

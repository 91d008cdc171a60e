"""Which session a dev stack runs: ``clean`` starts a new one, ``resume`` the last one.

The last session per mode is recorded in ``<home>/session.json``::

    {"live": {"session": "s-20250101-120000", "started_at": "2025-01-01T12:00:00+00:00"}}
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODES = ("paper", "shadow", "live")
SESSION_MODES = ("clean", "resume")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_session(home: Path, mode: str) -> str | None:
    entry = _load(home / "session.json").get(mode)
    if isinstance(entry, dict) and isinstance(entry.get("session"), str):
        return str(entry["session"])
    return None


def new_session_id(now: datetime, taken: set[str] | None = None) -> str:
    base = now.astimezone(UTC).strftime("s-%Y%m%d-%H%M%S")
    sid, n = base, 1
    while taken and sid in taken:
        n += 1
        sid = f"{base}-{n}"
    return sid


def resolve_session(home: Path, mode: str, session_mode: str, now: datetime | None = None) -> str:
    """The session id to run, recorded as the mode's last session."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if session_mode not in SESSION_MODES:
        raise ValueError(f"session mode must be one of {SESSION_MODES}, got {session_mode!r}")
    now = now or datetime.now(UTC)
    path = home / "session.json"
    data = _load(path)
    previous = last_session(home, mode)
    if session_mode == "resume" and previous:
        return previous
    taken = {e["session"] for e in data.values() if isinstance(e, dict) and "session" in e}
    sid = new_session_id(now, taken)
    data[mode] = {"session": sid, "started_at": now.astimezone(UTC).isoformat()}
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return sid

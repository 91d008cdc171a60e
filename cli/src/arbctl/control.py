"""Operator actions on a running stack: trading on/off over the bus, orphan cleanup."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from arbctl import engines

logger = logging.getLogger(__name__)

# What a recorded process's command line must contain for us to signal it (pid reuse guard).
_SIGNATURES = {"nats": "nats-server", "redis": "redis-server", "postgres": "postgres"}


class ControlError(RuntimeError):
    """A control request got no (valid) answer."""


def bus_target(state: dict[str, Any] | None, port_offset: int = 0) -> tuple[str, str]:
    """NATS URL and bus prefix: the running stack's, else ``ARB_NATS_URL``, else the default."""
    state = state or {}
    url = (state.get("urls") or {}).get("nats") or os.environ.get("ARB_NATS_URL") \
        or f"nats://127.0.0.1:{14222 + port_offset}"
    prefix = os.environ.get("ARB_BUS_PREFIX") or state.get("bus_prefix") or ""
    return str(url), str(prefix)


async def _request(url: str, subject: str, body: bytes, timeout: float) -> bytes:
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    try:
        nc = await asyncio.wait_for(nats_connect(url, min(timeout, 3.0)), timeout + 1)
    except Exception as exc:  # noqa: BLE001 - any connect failure is one clear message
        raise ControlError(f"cannot reach NATS at {url} ({type(exc).__name__}); "
                           "is the stack up? (`arbctl status`)") from None
    headers = {}
    token = os.environ.get("ARB_CONTROL_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        msg = await nc.request(subject, body, timeout=timeout, headers=headers or None)
        return bytes(msg.data)
    except NoRespondersError:
        raise ControlError(f"no service listens on {subject} (is strategy running?)") from None
    except (TimeoutError, NatsTimeout):
        raise ControlError(f"no reply on {subject} within {timeout:g}s") from None
    finally:
        await nc.close()


async def nats_connect(url: str, timeout: float) -> Any:
    """One connection attempt, quiet (no reconnect loop, no error-callback tracebacks)."""
    import nats

    async def quiet(exc: Exception) -> None:
        logger.debug("nats: %r", exc)

    return await nats.connect(url, connect_timeout=timeout, allow_reconnect=False,
                              max_reconnect_attempts=1, error_cb=quiet)


def set_trading(url: str, prefix: str, enabled: bool, timeout: float = 5.0) -> Any:
    """Send ``{"enabled": ...}`` to ``ctl.strategy.trading`` and return the decoded reply."""
    from arb_common.subjects import Subjects

    subject = Subjects(prefix).ctl("strategy", "trading")
    data = asyncio.run(_request(url, subject, json.dumps({"enabled": enabled}).encode(), timeout))
    try:
        return json.loads(data)
    except ValueError:
        raise ControlError(f"reply on {subject} is not JSON: {data[:200]!r}") from None


def kill_orphans(state: dict[str, Any] | None, timeout: float = 15.0) -> int:
    """Stop processes a dead supervisor left behind (pids from stack.json); returns how many."""
    if not state:
        return 0
    victims: list[int] = []
    for entry in reversed(state.get("processes") or []):
        pid, name = entry.get("pid"), str(entry.get("name", ""))
        if not isinstance(pid, int) or not engines.pid_alive(pid):
            continue
        sig = _SIGNATURES.get(name, "-m arb_")
        if sig in _cmdline(pid):
            logger.warning("stopping orphan name=%s pid=%s", name, pid)
            os.kill(pid, signal.SIGTERM)
            victims.append(pid)
    deadline = time.monotonic() + timeout
    while any(engines.pid_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in victims:
        if engines.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    home = state.get("home")
    if home:
        (Path(home) / "run" / "stack.json").unlink(missing_ok=True)
    return len(victims)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""

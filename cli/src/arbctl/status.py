"""``arbctl status``: is each process healthy and ready?

healthy: ``GET /healthz`` answers 200 (engines: a TCP connect succeeds);
ready: ``GET /readyz`` answers 200 (engines: same as healthy); ``detail``: what /readyz says is
missing or degraded (e.g. a venue not reconciled, new entries halted), when anything is.
The pids and ports come from ``<home>/run/stack.json``; with no stack recorded, the default
ports (plus ``ARB_PORT_OFFSET``) are probed and every pid is ``null``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from arbctl import engines

DEFAULT_SCHEME_PORTS = {"nats": 4222, "postgresql": 5432, "postgres": 5432, "redis": 6379}


def url_port(url: str) -> int:
    parts = urlsplit(url)
    if parts.port:
        return parts.port
    return DEFAULT_SCHEME_PORTS.get(parts.scheme.split("+")[0], 0)


def url_host(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


def _http_ok(url: str, timeout: float) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def probe(entry: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """One contract row: ``{"name", "pid", "port", "healthy", "ready"}``."""
    port = entry.get("port")
    host = entry.get("host") or "127.0.0.1"
    healthy = ready = False
    detail = ""
    if port:
        if entry.get("kind") == "engine":
            healthy = ready = engines.port_open(int(port), host, timeout)
        else:
            base = f"http://{host}:{port}"
            healthy = _http_ok(base + "/healthz", timeout)
            if healthy:
                ready, detail = _readyz(base + "/readyz", timeout)
    pid = entry.get("pid")
    row = {"name": entry["name"], "pid": pid if engines.pid_alive(pid) else None,
           "port": port, "healthy": healthy, "ready": ready}
    if detail:
        row["detail"] = detail
    return row


def _readyz(url: str, timeout: float) -> tuple[bool, str]:
    """(ready, why not / what is degraded) from a service's /readyz JSON."""
    try:
        resp = httpx.get(url, timeout=timeout)
        body = resp.json()
    except (httpx.HTTPError, ValueError):
        return False, ""
    notes = list(body.get("missing") or []) if isinstance(body, dict) else []
    if isinstance(body, dict) and isinstance(body.get("degraded"), dict):
        notes += [f"{k}: {v}" for k, v in body["degraded"].items()]
    return resp.status_code == 200, "; ".join(str(n) for n in notes)[:300]


def default_entries(port_offset: int = 0) -> list[dict[str, Any]]:
    from arbctl.stack import ENGINE_PORTS, SERVICES

    out: list[dict[str, Any]] = [
        {"name": n, "kind": "engine", "port": p + port_offset, "pid": None}
        for n, p in ENGINE_PORTS.items()
    ]
    out += [{"name": n, "kind": "service", "port": p + port_offset, "pid": None}
            for n, _, p in SERVICES]
    return out


def entries(home: Path, port_offset: int = 0) -> list[dict[str, Any]]:
    from arbctl.stack import read_state

    recorded = (read_state(home) or {}).get("processes")
    if isinstance(recorded, list) and recorded:
        return [e for e in recorded if isinstance(e, dict) and "name" in e]
    return default_entries(port_offset)


def collect(home: Path, port_offset: int = 0, timeout: float = 1.0) -> list[dict[str, Any]]:
    rows = entries(home, port_offset)
    with ThreadPoolExecutor(max_workers=max(1, len(rows))) as pool:
        return list(pool.map(lambda e: probe(e, timeout), rows))

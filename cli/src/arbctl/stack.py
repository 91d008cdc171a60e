"""The dev stack: engines, migration, simulator and the five services, supervised.

Importable for end-to-end tests::

    stack = Stack(tmp_path / "arb", mode="live", session_mode="clean", port_offset=1000)
    stack.start()                  # engines, migration, processes; returns at once
    stack.wait_healthy(120)        # raises StackError naming what is not healthy
    stack.processes()              # [{"name", "pid", "port", "healthy", "ready"}, ...]
    stack.stop()                   # services in reverse order, then engines

Everything lives under ``home`` (default ``<checkout>/.arb``, ``ARB_HOME``): ``engines/``
(data), ``logs/<name>.log``, ``run/stack.json`` (pids, ports, restarts), ``session.json``.
Every port is the contract default plus ``port_offset`` (``ARB_PORT_OFFSET``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from arbctl import engines, session, status
from arbctl.supervisor import Managed, RestartPolicy, Supervisor, last_log_line

logger = logging.getLogger(__name__)

ENGINE_PORTS: dict[str, int] = {"nats": 14222, "postgres": 15432, "redis": 16379}
# (process name, python module, HTTP port), in start order; stopped in reverse.
SERVICES: tuple[tuple[str, str, int], ...] = (
    ("venue-sim", "arb_venue_sim", 8090),
    ("market-data", "arb_market_data", 8081),
    ("strategy", "arb_strategy", 8082),
    ("executor", "arb_executor", 8083),
    ("state", "arb_state", 8084),
    ("reconciler", "arb_reconciler", 8085),
)
SIM_BASE_PORT = 8091
PROCESS_NAMES: tuple[str, ...] = (*ENGINE_PORTS, *(name for name, _, _ in SERVICES))
ALEMBIC_INI = Path("services/state/alembic.ini")


def free_port_offset(low: int = 1000, high: int = 16000, venues: int = 2) -> int:
    """A port offset under which every port of the stack is free and below the kernel's
    ephemeral range (32768+), where an outgoing connection's local port could take it."""
    import random

    bases = (*ENGINE_PORTS.values(), *(p for _, _, p in SERVICES),
             *(SIM_BASE_PORT + i for i in range(venues)))
    for _ in range(100):
        offset = random.randrange(low, high, 10)
        ports = [b + offset for b in bases]
        if max(ports) < 32768 and not any(engines.port_open(p) for p in ports):
            return offset
    raise StackError("no free port offset below 32768")


class StackError(RuntimeError):
    """The stack cannot start, or did not become healthy."""


def find_repo_root() -> Path:
    """The checkout: the nearest directory with ``pyproject.toml`` and ``services/``."""
    here = Path(__file__).resolve()
    for candidate in (Path.cwd(), *Path.cwd().parents, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "services").is_dir():
            return candidate
    return Path.cwd()


def default_home() -> Path:
    env = os.environ.get("ARB_HOME")
    return Path(env).resolve() if env else find_repo_root() / ".arb"


def state_file(home: Path) -> Path:
    return home / "run" / "stack.json"


def read_state(home: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(state_file(home).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running_supervisor(home: Path) -> int | None:
    """Pid of the live supervisor of the stack in ``home``, if any."""
    data = read_state(home) or {}
    pid = data.get("supervisor_pid")
    return pid if isinstance(pid, int) and engines.pid_alive(pid) else None


@dataclass
class ExternalUrls:
    nats: str | None = None
    database: str | None = None
    redis: str | None = None

    @classmethod
    def from_env(cls) -> ExternalUrls:
        env = os.environ
        return cls(env.get("ARB_NATS_URL") or None, env.get("ARB_DATABASE_URL") or None,
                   env.get("ARB_REDIS_URL") or None)


class Stack:
    def __init__(self, home: Path | str | None = None, mode: str = "live",
                 session_mode: str = "resume", port_offset: int = 0,
                 external: ExternalUrls | None = None, bus_prefix: str = "",
                 repo_root: Path | None = None,
                 services: Sequence[tuple[str, list[str], int]] | None = None,
                 policy: RestartPolicy | None = None) -> None:
        self.home = Path(home).resolve() if home else default_home()
        self.mode = mode
        self.session_mode = session_mode
        self.port_offset = port_offset
        self.external = external or ExternalUrls()
        self.bus_prefix = bus_prefix
        self.repo_root = repo_root or find_repo_root()
        # (name, argv, port before offset); default: ``python -m <module>`` for SERVICES.
        self.services = list(services) if services is not None else [
            (name, [sys.executable, "-m", module], port) for name, module, port in SERVICES]
        self.policy = policy
        self.session = ""
        self.urls: dict[str, str] = {}
        self.supervisor: Supervisor | None = None
        self.started_at = ""
        self.phase = "starting"  # -> "running" once every process has been launched

    # ------------------------------------------------------------ layout
    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def port(self, name: str) -> int:
        if name in ENGINE_PORTS:
            return ENGINE_PORTS[name] + self.port_offset
        ports = {n: p for n, _, p in SERVICES} | {n: p for n, _, p in self.services}
        return ports[name] + self.port_offset

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start engines, migrate, start the processes and supervise them (in a thread)."""
        other = running_supervisor(self.home)
        if other and other != os.getpid():
            raise StackError(f"a stack is already running from {self.home} (supervisor pid "
                             f"{other}); `arbctl down` first")
        for sub in ("logs", "run", "engines"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.session = session.resolve_session(self.home, self.mode, self.session_mode)
        self.started_at = datetime.now(UTC).isoformat()
        logger.info("starting stack home=%s mode=%s session=%s offset=%s", self.home, self.mode,
                    self.session, self.port_offset)
        engine_procs = self._engine_processes()
        self.supervisor = Supervisor(engine_procs, self.policy, on_change=self.write_state)
        try:
            self.supervisor.start_all()
            down = [p for p in engine_procs if not p.alive()]
            if down:
                raise StackError("engine(s) failed to start: " + "; ".join(
                    p.last_error or p.name for p in down))
            self.urls = {p.name: p.url or "" for p in engine_procs}
            self.migrate()
            services = self._service_processes()
            self.supervisor.processes.extend(services)
            for proc in services:
                self.supervisor.start_one(proc, time.monotonic())
            self.phase = "running"
            self.write_state()
        except BaseException:
            self.stop()
            raise
        self.supervisor.run_in_background()

    def stop(self) -> None:
        """Services in reverse order (SIGTERM, wait), then the engines."""
        if self.supervisor is not None:
            logger.info("stopping stack home=%s", self.home)
            self.supervisor.stop_all()
        data = read_state(self.home)
        if data and data.get("supervisor_pid") == os.getpid():
            state_file(self.home).unlink(missing_ok=True)

    def wait_healthy(self, timeout: float = 120.0, ready: bool = False) -> list[dict[str, Any]]:
        """Block until every process answers ``/healthz`` (and ``/readyz`` if ``ready``)."""
        deadline = time.monotonic() + timeout
        key = "ready" if ready else "healthy"
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.processes()
            if all(r[key] for r in rows):
                return rows
            time.sleep(0.5)
        raise StackError(describe_unhealthy(rows, key, self.home, timeout))

    def processes(self) -> list[dict[str, Any]]:
        """The contract's status rows: name, pid, port, healthy, ready."""
        return status.collect(self.home, self.port_offset)

    # ------------------------------------------------------------ building blocks
    def _engine_processes(self) -> list[Managed]:
        starters = {"nats": engines.start_nats, "postgres": engines.start_postgres,
                    "redis": engines.start_redis}
        given = {"nats": self.external.nats, "postgres": self.external.database,
                 "redis": self.external.redis}
        data = self.home / "engines"
        procs = []
        for name, start in starters.items():
            url = given[name]
            port = status.url_port(url) if url else self.port(name)
            procs.append(Managed(name, "engine", port, external_url=url,
                                 log=data / name / f"{name}.log",
                                 starter=None if url else partial(start, data, port)))
        return procs

    def service_env(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ARB_MODE": self.mode,
            "ARB_SESSION": self.session,
            "ARB_PROFILE": "dev",
            "ARB_NATS_URL": self.urls["nats"],
            "ARB_DATABASE_URL": self.urls["postgres"],
            "ARB_REDIS_URL": self.urls["redis"],
            "ARB_HTTP_PORT": str(port),
            "ARB_VENUE_SIM_URL": f"http://127.0.0.1:{self.port('venue-sim')}",
            "ARB_SIM_BASE_PORT": str(SIM_BASE_PORT + self.port_offset),
            "ARB_BUS_PREFIX": self.bus_prefix,
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def _service_processes(self) -> list[Managed]:
        return [
            Managed(name, "service", self.port(name), argv=argv,
                    env=self.service_env(self.port(name)), cwd=self.repo_root,
                    log=self.logs / f"{name}.log")
            for name, argv, _ in self.services
        ]

    def migrate(self) -> None:
        """``alembic upgrade head`` with the state service's alembic.ini, when it exists."""
        ini = self.repo_root / ALEMBIC_INI
        if not ini.is_file():
            logger.info("skipping migration: %s not found", ini)
            return
        log = self.logs / "migrate.log"
        env = dict(os.environ, ARB_DATABASE_URL=self.urls["postgres"], ARB_MODE=self.mode,
                   ARB_SESSION=self.session)
        logger.info("migrating database: alembic -c %s upgrade head", ALEMBIC_INI)
        with open(log, "ab") as fh:
            res = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "upgrade",
                                  "head"], cwd=self.repo_root, env=env, stdout=fh,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 timeout=300, check=False)
        if res.returncode != 0:
            raise StackError(f"database migration failed (exit {res.returncode}): "
                             f"{last_log_line(log)} — see {log}")

    def write_state(self) -> None:
        if self.supervisor is None:
            return
        known = {p.name for p in self.supervisor.processes}
        planned = [{"name": name, "kind": "service", "pid": None, "port": self.port(name),
                    "host": "127.0.0.1", "state": "pending", "restarts": 0, "last_exit": None,
                    "last_error": "", "log": str(self.logs / f"{name}.log")}
                   for name, _, _ in self.services if name not in known]
        data = {
            "supervisor_pid": os.getpid(),
            "home": str(self.home),
            "mode": self.mode,
            "session": self.session,
            "port_offset": self.port_offset,
            "bus_prefix": self.bus_prefix,
            "started_at": self.started_at,
            "phase": self.phase,
            "urls": {**self.urls,
                     "venue_sim": f"http://127.0.0.1:{self.port('venue-sim')}"},
            "processes": [
                {"name": p.name, "kind": p.kind, "pid": p.pid, "port": p.port,
                 "host": status.url_host(p.url) if p.url else "127.0.0.1",
                 "state": p.state, "restarts": p.restarts, "last_exit": p.last_exit,
                 "last_error": p.last_error, "log": str(p.log) if p.log else None}
                for p in self.supervisor.processes
            ] + planned,
        }
        path = state_file(self.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o600)  # URLs of external engines may carry credentials
        tmp.replace(path)


def describe_unhealthy(rows: list[dict[str, Any]], key: str, home: Path, timeout: float) -> str:
    """Which processes are not healthy, with each one's last log line."""
    extra = {p["name"]: p for p in (read_state(home) or {}).get("processes", [])}
    lines = [f"not {key} after {timeout:.0f}s:"]
    for row in rows:
        if row[key]:
            continue
        info = extra.get(row["name"], {})
        why = info.get("last_error") or last_log_line(Path(info["log"]) if info.get("log")
                                                      else None)
        lines.append(f"  {row['name']} (port {row['port']}, state {info.get('state', '?')}, "
                     f"restarts {info.get('restarts', 0)}): {why or 'no output'}")
    lines.append(f"logs: {home / 'logs'}")
    return "\n".join(lines)

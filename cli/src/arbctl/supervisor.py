"""Keep a set of processes running, like a container restart policy.

A :class:`Managed` process is started in order; one that dies is restarted after a backoff
(1 s doubling to 30 s, back to 1 s once it has stayed up 30 s) and counted in ``restarts``.
:meth:`Supervisor.stop_all` stops them in reverse order: SIGTERM, wait, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from arbctl import engines

logger = logging.getLogger(__name__)


@dataclass
class RestartPolicy:
    min_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 30.0  # a run this long resets the backoff

    def next_backoff(self, current: float, ran_for: float) -> float:
        if ran_for >= self.reset_after_s:
            return self.min_backoff_s
        return min(max(current * 2, self.min_backoff_s), self.max_backoff_s)


@dataclass
class Managed:
    """One supervised process: a subprocess (``argv``) or an embedded engine (``starter``)."""

    name: str
    kind: str  # "engine" | "service"
    port: int | None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: Path | None = None
    log: Path | None = None
    starter: Callable[[], engines.Engine] | None = None
    external_url: str | None = None  # an engine we do not run (ARB_*_URL given)
    stop_timeout_s: float = 15.0
    # runtime
    restarts: int = 0
    state: str = "pending"  # pending | running | backoff | stopped | external
    last_exit: int | None = None
    last_error: str = ""
    started_at: float = 0.0
    next_start_at: float = 0.0
    backoff_s: float = 0.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _engine: engines.Engine | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        if self._engine is not None and self._engine.alive():
            return self._engine.pid
        return None

    @property
    def url(self) -> str | None:
        return self.external_url or (self._engine.url if self._engine else None)

    def alive(self) -> bool:
        if self.external_url is not None:
            return True
        if self._proc is not None:
            return self._proc.poll() is None
        return self._engine is not None and self._engine.alive()

    def start(self) -> None:
        if self.external_url is not None:
            self.state = "external"
            return
        self.started_at = time.monotonic()
        if self.starter is not None:
            self._engine = self.starter()
        else:
            self._proc = self._spawn()
        self.state = "running"
        logger.info("started name=%s pid=%s restarts=%s", self.name, self.pid, self.restarts)

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self.log is not None, "a subprocess needs a log file"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            fh.write(f"--- arbctl {stamp}: start #{self.restarts + 1}: "
                     f"{' '.join(self.argv)}\n".encode())
            fh.flush()
            # Own session: a Ctrl-C in the terminal reaches arbctl only; it stops us in order.
            return subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.stop()
            self._engine = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _terminate(proc, self.name, self.stop_timeout_s)
        if self.state != "external":
            self.state = "stopped"


def _terminate(proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the child and anything it started
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("no exit %.0fs after SIGTERM, killing name=%s pid=%s", timeout, name,
                       proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def last_log_line(path: Path | None, skip_marker: str = "--- arbctl") -> str:
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 8192))
        lines = fh.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        if line.strip() and not line.startswith(skip_marker):
            return line.strip()[:300]
    return ""


class Supervisor:
    """Starts processes in order, restarts the ones that die, stops them in reverse order."""

    def __init__(self, processes: list[Managed], policy: RestartPolicy | None = None,
                 on_change: Callable[[], None] | None = None, tick_s: float = 0.25) -> None:
        self.processes = processes
        self.policy = policy or RestartPolicy()
        self.on_change = on_change or (lambda: None)
        self.tick_s = tick_s
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start_all(self) -> None:
        """Start every process in order; one that fails to start is retried by :meth:`tick`."""
        with self._lock:
            for proc in self.processes:
                self.start_one(proc, time.monotonic())
        self.on_change()

    def start_one(self, proc: Managed, now: float) -> None:
        try:
            proc.start()
        except Exception as exc:  # noqa: BLE001 - a failed start is retried with backoff
            proc.last_error = str(exc).splitlines()[0][:300] if str(exc) else repr(exc)
            logger.error("start failed name=%s error=%s", proc.name, proc.last_error)
            self._schedule_restart(proc, now, ran_for=0.0)

    def _schedule_restart(self, proc: Managed, now: float, ran_for: float) -> None:
        proc.backoff_s = self.policy.next_backoff(proc.backoff_s, ran_for)
        proc.next_start_at = now + proc.backoff_s
        proc.state = "backoff"

    def tick(self, now: float | None = None) -> None:
        """One supervision pass: notice deaths, restart whatever is due."""
        now = time.monotonic() if now is None else now
        changed = False
        with self._lock:
            if self._stopping.is_set():
                return
            for proc in self.processes:
                if proc.state == "running" and not proc.alive():
                    proc.last_exit = proc.exit_code()
                    proc.last_error = last_log_line(proc.log) if proc.log else "engine exited"
                    proc.stop()
                    self._schedule_restart(proc, now, ran_for=now - proc.started_at)
                    logger.warning("died name=%s exit=%s restart_in=%.1fs last=%s", proc.name,
                                   proc.last_exit, proc.backoff_s, proc.last_error)
                    changed = True
                elif proc.state == "backoff" and now >= proc.next_start_at:
                    proc.restarts += 1
                    self.start_one(proc, now)
                    changed = True
        if changed:
            self.on_change()

    def run_in_background(self) -> None:
        def loop() -> None:
            while not self._stopping.wait(self.tick_s):
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - supervision must go on
                    logger.exception("supervisor tick failed")

        self._thread = threading.Thread(target=loop, name="arbctl-supervisor", daemon=True)
        self._thread.start()

    def stop_all(self) -> None:
        """Stop supervising, then stop every process in reverse order."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        with self._lock:
            for proc in reversed(self.processes):
                if proc.state in ("running", "backoff", "pending"):
                    logger.info("stopping name=%s pid=%s", proc.name, proc.pid)
                    try:
                        proc.stop()
                    except Exception:  # noqa: BLE001 - stop the rest regardless
                        logger.exception("stop failed name=%s", proc.name)
        self.on_change()

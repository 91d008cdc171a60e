"""A process that dies is restarted with backoff and counted; stop is in reverse order."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from arbctl.supervisor import Managed, RestartPolicy, Supervisor

FAST = RestartPolicy(min_backoff_s=0.05, max_backoff_s=0.2, reset_after_s=30.0)


def _child(tmp_path: Path, name: str, code: str) -> Managed:
    return Managed(name, "service", None, argv=[sys.executable, "-c", code],
                   log=tmp_path / f"{name}.log")


def _run_until(sup: Supervisor, cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        sup.tick()
        time.sleep(0.02)
    assert cond(), "condition not reached in time"


def test_dying_child_is_restarted_and_counted(tmp_path: Path) -> None:
    dying = _child(tmp_path, "dying",
                   "import time; print('up', flush=True); time.sleep(0.2); raise SystemExit(1)")
    sup = Supervisor([dying], FAST)
    sup.start_all()
    try:
        _run_until(sup, lambda: dying.restarts >= 3)
        assert dying.last_exit == 1
        assert dying.state in ("running", "backoff")
        # every start is marked in the log, so an operator sees the restarts
        assert dying.log is not None
        assert dying.log.read_text().count("--- arbctl") >= 3
    finally:
        sup.stop_all()
    assert dying.pid is None and dying.state == "stopped"


def test_healthy_child_is_left_alone_and_stopped_with_sigterm(tmp_path: Path) -> None:
    steady = _child(tmp_path, "steady", "import time; time.sleep(60)")
    sup = Supervisor([steady], FAST)
    sup.start_all()
    pid = steady.pid
    assert pid is not None
    for _ in range(20):
        sup.tick()
        time.sleep(0.02)
    assert steady.restarts == 0 and steady.pid == pid
    started = time.monotonic()
    sup.stop_all()
    assert time.monotonic() - started < 5
    assert steady.pid is None


def test_children_stop_in_reverse_order(tmp_path: Path) -> None:
    order_file = tmp_path / "order.txt"
    code = ("import signal, sys, time\n"
            "def bye(*_):\n"
            f"    open({str(order_file)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    script = tmp_path / "child.py"
    script.write_text(code)
    procs = [Managed(n, "service", None, argv=[sys.executable, str(script), n],
                     log=tmp_path / f"{n}.log") for n in ("first", "second", "third")]
    sup = Supervisor(procs, FAST)
    sup.start_all()
    _run_until(sup, lambda: all("ready" in (p.log.read_text() if p.log else "") for p in procs))
    sup.stop_all()
    assert order_file.read_text().split() == ["third", "second", "first"]


def test_a_command_that_cannot_start_is_reported_not_fatal(tmp_path: Path) -> None:
    missing = Managed("ghost", "service", None, argv=[str(tmp_path / "no-such-binary")],
                      log=tmp_path / "ghost.log")
    sup = Supervisor([missing], FAST)
    sup.start_all()
    try:
        assert missing.state == "backoff"
        assert "no-such-binary" in missing.last_error
        _run_until(sup, lambda: missing.restarts >= 2)
    finally:
        sup.stop_all()


def test_backoff_grows_and_resets_after_a_long_run() -> None:
    policy = RestartPolicy(min_backoff_s=1, max_backoff_s=30, reset_after_s=30)
    b = 0.0
    seen = []
    for _ in range(7):
        b = policy.next_backoff(b, ran_for=0.5)
        seen.append(b)
    assert seen == [1, 2, 4, 8, 16, 30, 30]
    assert policy.next_backoff(30, ran_for=120) == 1

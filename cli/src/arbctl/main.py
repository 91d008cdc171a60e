"""``arbctl``: run and operate the dev stack (see ARCHITECTURE.md, "Contract for operators").

    arbctl up [--detach] [--mode paper|shadow|live] [--session-mode clean|resume]
    arbctl down
    arbctl status [--json]
    arbctl trading off|on
    arbctl snapshot
    arbctl unblock [SYMBOL]
    arbctl ack VENUE
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from arb_common.settings import Mode
from arbctl import control, engines, status, view
from arbctl.stack import (
    ExternalUrls,
    Stack,
    StackError,
    default_home,
    describe_unhealthy,
    read_state,
    running_supervisor,
)
from arbctl.supervisor import last_log_line

app = typer.Typer(help="Run and operate the arbitrage dev stack.", no_args_is_help=True,
                  add_completion=False)
console = Console()
err = Console(stderr=True)


class SessionMode(StrEnum):
    clean = "clean"
    resume = "resume"


class Switch(StrEnum):
    off = "off"
    on = "on"


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _port_offset() -> int:
    raw = os.environ.get("ARB_PORT_OFFSET", "0") or "0"
    try:
        return int(raw)
    except ValueError:
        _fail(f"ARB_PORT_OFFSET must be an integer (got {raw!r})", 2)


def _log_to(path: Path | None) -> None:
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # health probes, once a second


def _make_stack(mode: Mode, session_mode: SessionMode) -> Stack:
    return Stack(default_home(), mode.value, session_mode.value, _port_offset(),
                 ExternalUrls.from_env(), os.environ.get("ARB_BUS_PREFIX", ""))


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# ---------------------------------------------------------------- up / down


@app.command()
def up(
    detach: Annotated[bool, typer.Option(
        "--detach", "-d", help="Run in the background; return once healthy.")] = False,
    mode: Annotated[Mode, typer.Option(help="Trading mode.")] = Mode.live,
    session_mode: Annotated[SessionMode, typer.Option(
        help="clean: a new session; resume: the last one of this mode.")] = SessionMode.resume,
    timeout: Annotated[float, typer.Option(help="--detach: seconds to wait for health.")] = 180.0,
) -> None:
    """Start engines, simulator and services, and supervise them (restart on exit)."""
    home = default_home()
    other = running_supervisor(home)
    if other:
        _fail(f"a stack is already running from {home} (supervisor pid {other}); "
              "`arbctl down` first")
    if detach:
        _up_detached(home, mode, session_mode, timeout)
        return
    _log_to(home / "logs" / "supervisor.log")
    stack = _make_stack(mode, session_mode)
    signal.signal(signal.SIGTERM, _on_sigterm)
    watcher: view.BookWatcher | None = None
    try:
        with console.status("starting engines, migration, simulator and services..."):
            stack.start()
        watcher = view.BookWatcher(stack.urls["nats"], stack.bus_prefix).start()
        with Live(console=console, refresh_per_second=2, screen=False) as live:
            while True:
                state = read_state(home) or {}
                live.update(view.snapshot(home, state, stack.port_offset, watcher))
                time.sleep(1.0)
    except (StackError, engines.EngineError) as exc:
        stack.stop()
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopping: services in reverse order, then engines...")
    finally:
        # A second Ctrl-C / SIGTERM must not cut the ordered stop short (no orphans).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if watcher is not None:
            watcher.stop()
        stack.stop()
    console.print("stopped.")


def _up_detached(home: Path, mode: Mode, session_mode: SessionMode, timeout: float) -> None:
    log = home / "logs" / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "arbctl", "_supervise", "--mode", mode.value,
            "--session-mode", session_mode.value]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, ARB_HOME=str(home)))
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    with console.status("starting the stack in the background..."):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _fail(f"the supervisor exited ({proc.returncode}): {last_log_line(log)}\n"
                      f"see {log}")
            state = read_state(home) or {}
            if state.get("supervisor_pid") == proc.pid and state.get("phase") == "running":
                rows = status.collect(home, _port_offset())
                if rows and all(r["healthy"] for r in rows):
                    _print_table(rows)
                    console.print(f"stack up (supervisor pid {proc.pid}, mode {mode.value}, "
                                  f"session {state.get('session')}); `arbctl down` stops it")
                    return
            time.sleep(0.5)
    _fail(describe_unhealthy(rows, "healthy", home, timeout)
          + f"\nthe stack is left running (supervisor pid {proc.pid}): `arbctl down` stops it")


@app.command("_supervise", hidden=True)
def supervise(
    mode: Annotated[Mode, typer.Option()] = Mode.live,
    session_mode: Annotated[SessionMode, typer.Option()] = SessionMode.resume,
) -> None:
    """Run the stack until SIGTERM (the background half of `up --detach`)."""
    _log_to(None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = _make_stack(mode, session_mode)
    try:
        stack.start()
    except (StackError, engines.EngineError) as exc:
        logging.getLogger("arbctl").error("stack failed to start: %s", exc)
        raise typer.Exit(1) from None
    logging.getLogger("arbctl").info("stack running; SIGTERM stops it")
    stop.wait()
    stack.stop()


@app.command()
def down(timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 120.0) -> None:
    """Stop a detached stack gracefully (services in reverse order, then engines)."""
    home = default_home()
    pid = running_supervisor(home)
    if pid is None:
        left = control.kill_orphans(read_state(home))
        console.print("no stack running" + (f" (stopped {left} orphaned processes)"
                                            if left else ""))
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status(f"stopping the stack (supervisor pid {pid})..."):
        while engines.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if engines.pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        left = control.kill_orphans(read_state(home))
        _fail(f"the supervisor did not stop within {timeout:.0f}s; killed it and "
              f"{left} processes")
    console.print("stack stopped")


# ---------------------------------------------------------------- status / trading


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="arb dev stack")
    for col in ("name", "pid", "port", "healthy", "ready", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["pid"] or "-"), str(r["port"] or "-"),
                      view._mark(r["healthy"]), view._mark(r["ready"]), r.get("detail", ""))
    console.print(table)


@app.command("status")
def status_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
               ) -> None:
    """Each process: pid, port, healthy (/healthz), ready (/readyz)."""
    rows = status.collect(default_home(), _port_offset())
    if as_json:
        sys.stdout.write(json.dumps({"processes": rows}) + "\n")
    else:
        _print_table(rows)


@app.command()
def trading(
    switch: Annotated[Switch, typer.Argument(help="off: no new entries; on: resume.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
) -> None:
    """Stop (off) or resume (on) new entries: request on ctl.strategy.trading."""
    home = default_home()
    url, prefix = control.bus_target(read_state(home), _port_offset())
    try:
        reply = control.set_trading(url, prefix, switch is Switch.on, timeout)
    except control.ControlError as exc:
        _fail(str(exc))
    sys.stdout.write(json.dumps(reply) + "\n")
    if isinstance(reply, dict) and reply.get("ok") is False:
        raise typer.Exit(1)


def _ctl_request(service: str, verb: str, body: dict[str, Any], timeout: float,
                 failed: str) -> None:
    """Request ``ctl.<service>.<verb>``, print the JSON reply; exit 1 saying ``failed`` and
    the service's error unless it answered ``ok``."""
    from arb_common.subjects import Subjects

    url, prefix = control.bus_target(read_state(default_home()), _port_offset())
    subject = Subjects(prefix).ctl(service, verb)
    try:
        data = asyncio.run(control._request(url, subject, json.dumps(body).encode(), timeout))
    except control.ControlError as exc:
        _fail(str(exc))
    try:
        reply = json.loads(data)
    except ValueError:
        _fail(f"reply on {subject} is not JSON: {data[:200]!r}")
    sys.stdout.write(json.dumps(reply) + "\n")
    if not isinstance(reply, dict) or reply.get("ok") is not True:
        error = reply.get("error") if isinstance(reply, dict) else None
        _fail(f"{failed}: {error or reply}")


@app.command()
def snapshot(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 15.0,
) -> None:
    """Take a strategy snapshot now (request on ctl.strategy.snapshot); prints its id."""
    _ctl_request("strategy", "snapshot", {}, timeout, "the strategy did not take a snapshot")


@app.command()
def ack(
    venue: Annotated[str, typer.Argument(help="Venue whose halt you have dealt with.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
) -> None:
    """Acknowledge what halted new entries on a venue (external activity, balance drift):
    entries resume and the venue's balances are taken as the new baseline."""
    _ctl_request("reconciler", "ack", {"venue": venue}, timeout,
                 "the reconciler did not acknowledge")


@app.command()
def unblock(
    symbol: Annotated[str | None, typer.Argument(
        help="Symbol to clear (e.g. BTC-USDT); none: list the blocks.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
) -> None:
    """Clear a block the executor raised for unhedged exposure (ctl.strategy.unblock), after
    the position was dealt with; without a symbol, list the blocked symbols."""
    body: dict[str, Any] = {"actor": "arbctl"}
    if symbol is not None:
        body["symbol"] = symbol
    _ctl_request("strategy", "unblock", body, timeout, "the strategy did not clear the block")


# ---------------------------------------------------------------- sessions


@app.command("sessions")
def sessions_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
                 ) -> None:
    """Sessions in the ledger (newest first): id, mode, status, start, stop."""
    from arbctl import sessions

    try:
        with sessions.ledger(default_home(), _port_offset()) as url:
            rows = sessions.list_sessions(url)
    except sessions.SessionError as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps({"items": rows}) + "\n")
        return
    table = Table(title="sessions")
    for col in ("id", "mode", "status", "started_at", "stopped_at"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c] or "-") for c in ("id", "mode", "status", "started_at",
                                                     "stopped_at")))
    console.print(table)


@app.command()
def reset(
    mode: Annotated[Mode, typer.Option("--mode", help="The mode to reset.")],
    yes: Annotated[bool, typer.Option("--yes", help="Really do it.")] = False,
) -> None:
    """Clear one mode's Redis namespace and close its sessions in the ledger (never another
    mode's). Refuses without --yes and while a stack of that mode runs."""
    from arbctl import sessions

    if not yes:
        _fail(f"reset clears every {mode.value} session's hot state and closes its sessions; "
              "add --yes to do it", 2)
    home = default_home()
    state = read_state(home) or {}
    redis_url = os.environ.get("ARB_REDIS_URL") or (
        state.get("urls", {}).get("redis") if running_supervisor(home) else None)
    prefix = os.environ.get("ARB_BUS_PREFIX", state.get("bus_prefix", "")) or ""
    try:
        with sessions.ledger(home, _port_offset()) as url:
            done = sessions.reset_mode(home, mode.value, url, redis_url, prefix)
    except sessions.SessionError as exc:
        _fail(str(exc))
    if redis_url is None:
        done["redis"] = "embedded Redis not running (it keeps nothing on disk)"
    sys.stdout.write(json.dumps(done) + "\n")


if __name__ == "__main__":  # pragma: no cover
    app()

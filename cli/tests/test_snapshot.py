"""`arbctl snapshot` is a request on ctl.strategy.snapshot; no answer is a clear error."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from typer.testing import CliRunner

from arbctl.main import app

Reply = Callable[[dict[str, Any]], dict[str, Any]]


def _serve(nats_url: str, subject: str, reply: Reply, seen: list[dict[str, Any]],
           ready: threading.Event, stop: threading.Event) -> None:
    async def serve() -> None:
        nc = await nats.connect(nats_url)

        async def on_msg(msg: Any) -> None:
            req = json.loads(msg.data)
            seen.append(req)
            await msg.respond(json.dumps(reply(req)).encode())

        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    asyncio.run(serve())


@pytest.fixture
def strategy_stub(nats_url: str, bus_prefix: str) -> Iterator[Callable[[Reply], list[Any]]]:
    """Starts a stand-in strategy answering on <prefix>.ctl.strategy.snapshot."""
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(reply: Reply) -> list[Any]:
        seen: list[Any] = []
        ready, stop = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=_serve, daemon=True,
            args=(nats_url, f"{bus_prefix}.ctl.strategy.snapshot", reply, seen, ready, stop))
        thread.start()
        assert ready.wait(10)
        stops.append((stop, thread))
        return seen

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(5)


@pytest.fixture
def cli_env(nats_url: str, bus_prefix: str, monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> None:
    monkeypatch.setenv("ARB_HOME", str(tmp_path))
    monkeypatch.setenv("ARB_NATS_URL", nats_url)
    monkeypatch.setenv("ARB_BUS_PREFIX", bus_prefix)


def test_snapshot_sends_the_request_and_prints_the_snapshot_id(
    cli_env: None, strategy_stub: Callable[[Reply], list[Any]]
) -> None:
    seen = strategy_stub(lambda req: {"ok": True, "snapshot_id": "strategy:paper:s1:42:7",
                                      "exec_seq": 42})
    result = CliRunner().invoke(app, ["snapshot"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "snapshot_id": "strategy:paper:s1:42:7",
                                         "exec_seq": 42}
    assert seen == [{}]


def test_snapshot_refused_by_the_strategy_exits_1_with_its_error(
    cli_env: None, strategy_stub: Callable[[Reply], list[Any]]
) -> None:
    strategy_stub(lambda req: {"ok": False, "error": "state service did not answer"})
    result = CliRunner().invoke(app, ["snapshot"])
    assert result.exit_code == 1
    assert "state service did not answer" in result.output


def test_snapshot_without_a_strategy_fails_with_a_clear_message(cli_env: None) -> None:
    result = CliRunner().invoke(app, ["snapshot", "--timeout", "1"])
    assert result.exit_code == 1
    assert "ctl.strategy.snapshot" in result.output

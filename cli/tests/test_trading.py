"""`arbctl trading off|on` is a request on ctl.strategy.trading; no answer is a clear error."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import nats
import pytest
from typer.testing import CliRunner

from arbctl.main import app


@pytest.fixture
def responder(nats_url: str, bus_prefix: str) -> Iterator[list[dict[str, object]]]:
    """A stand-in strategy answering on <prefix>.ctl.strategy.trading in its own loop."""
    seen: list[dict[str, object]] = []
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        nc = await nats.connect(nats_url)

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            req = json.loads(msg.data)
            seen.append(req)
            await msg.respond(json.dumps({"ok": True, "enabled": req["enabled"]}).encode())

        await nc.subscribe(f"{bus_prefix}.ctl.strategy.trading", cb=on_msg)
        await nc.flush()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield seen
    stop.set()
    thread.join(5)


def test_trading_off_then_on_sends_the_request_and_prints_the_reply(
    responder: list[dict[str, object]], nats_url: str, bus_prefix: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ARB_HOME", str(tmp_path))
    monkeypatch.setenv("ARB_NATS_URL", nats_url)
    monkeypatch.setenv("ARB_BUS_PREFIX", bus_prefix)
    runner = CliRunner()
    off = runner.invoke(app, ["trading", "off"])
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout) == {"ok": True, "enabled": False}
    on = runner.invoke(app, ["trading", "on"])
    assert on.exit_code == 0, on.output
    assert responder == [{"enabled": False}, {"enabled": True}]


def test_trading_without_a_strategy_fails_with_a_clear_message(
    nats_url: str, bus_prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ARB_HOME", str(tmp_path))
    monkeypatch.setenv("ARB_NATS_URL", nats_url)
    monkeypatch.setenv("ARB_BUS_PREFIX", bus_prefix)
    result = CliRunner().invoke(app, ["trading", "off", "--timeout", "1"])
    assert result.exit_code == 1
    assert "ctl.strategy.trading" in result.output

"""Exposure the executor could not hedge blocks new entries on that symbol; an operator's
``ctl.strategy.unblock`` clears it; both survive a restart (rebuilt from the RISK stream).
Control actions need the token outside the dev profile."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest
from strategy_helpers import (
    graceful_stop,
    new_strategy,
    open_gate,
    publish_books,
    wide_books,
)

from arb_common.bus import Bus
from arb_common.messages import RiskEvent
from arb_common.testing import connected_bus
from arb_common.testing import wait_until as wait_for

pytestmark = pytest.mark.integration


async def executor_block(nats_url: str, prefix: str, symbol: str) -> None:
    async with connected_bus(nats_url, prefix, "executor", session="itest") as ex:
        await ex.publish(ex.subjects.risk(symbol),
                         RiskEvent(symbol=symbol, kind="unhedged_exposure", blocked=True,
                                   detail="intent X:open: bought-sold=0.5"),
                         f"risk:{symbol}:unhedged_exposure:X:open")


async def test_unhedged_exposure_blocks_entries_until_unblocked_and_survives_restart(
        md_bus: Bus, nats_url: str, bus_prefix: str, snapshots: object) -> None:
    await open_gate(md_bus)
    await executor_block(nats_url, bus_prefix, "BTC-USDT")
    svc = await new_strategy(nats_url, bus_prefix)
    try:
        await wait_for(lambda: "BTC-USDT" in svc.guard.blocks, what="block from RISK")
        ok, reason = svc.guard.allow_open("BTC-USDT", Decimal(1))
        assert not ok and reason.startswith("unhedged_exposure")
        await publish_books(md_bus, *wide_books(10))
        await asyncio.sleep(0.3)
        assert svc.engine.open_trades() == {}  # blocked: no new entry
        # Another mode's or session's block is not ours.
        async with connected_bus(nats_url, bus_prefix, "executor", session="other") as ex:
            await ex.publish(ex.subjects.risk("ETH-USDT"),
                             RiskEvent(symbol="ETH-USDT", kind="unhedged_exposure",
                                       blocked=True), "risk:ETH-USDT:other")
        await asyncio.sleep(0.3)
        assert set(svc.guard.blocks) == {"BTC-USDT"}
    finally:
        await graceful_stop(svc)
    # Restart: the block comes back from RISK; the operator clears it.
    svc = await new_strategy(nats_url, bus_prefix)
    try:
        await wait_for(lambda: "BTC-USDT" in svc.guard.blocks, what="block rebuilt")
        subject = md_bus.subjects.ctl("strategy", "unblock")
        reply = orjson.loads((await md_bus.nc.request(
            subject, b'{"symbol": "BTC-USDT"}', timeout=5)).data)
        assert reply == {"ok": True, "symbol": "BTC-USDT", "was_blocked": True, "blocks": {}}
        bad = orjson.loads((await md_bus.nc.request(subject, b'{"symbol": 5}', timeout=5)).data)
        assert bad["ok"] is False and "symbol" in bad["error"]
        await publish_books(md_bus, *wide_books(20))
        await wait_for(lambda: "BTC-USDT" in svc.engine.open_trades(), what="open after clear")
    finally:
        await graceful_stop(svc)
    svc = await new_strategy(nats_url, bus_prefix)
    try:
        await asyncio.sleep(0.5)
        assert svc.guard.blocks == {}  # the clear is durable too
    finally:
        await graceful_stop(svc)


async def test_control_actions_need_the_token_outside_dev(
        md_bus: Bus, nats_url: str, bus_prefix: str, snapshots: object) -> None:
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix, profile="staging",
                             control_token="s3cret-token")
    try:
        subject = md_bus.subjects.ctl("strategy", "trading")
        refused = orjson.loads((await md_bus.nc.request(
            subject, b'{"enabled": false}', timeout=5)).data)
        assert refused == {"ok": False, "error": "control token required"}
        assert svc.engine.trading_enabled is True
        wrong = orjson.loads((await md_bus.nc.request(
            subject, b'{"enabled": false}', timeout=5,
            headers={"Authorization": "Bearer nope"})).data)
        assert wrong["ok"] is False
        good = orjson.loads((await md_bus.nc.request(
            subject, b'{"enabled": false}', timeout=5,
            headers={"Authorization": "Bearer s3cret-token"})).data)
        assert good["ok"] is True and svc.engine.trading_enabled is False
        state = orjson.loads((await md_bus.nc.request(
            md_bus.subjects.ctl("strategy", "state"), b"{}", timeout=5)).data)
        assert state["ok"] is True  # reading needs no token
    finally:
        await graceful_stop(svc)

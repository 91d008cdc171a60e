"""The strategy's Redis hot state on real Redis: guard, daily guard, cooldowns (expiring at
their end), heartbeat, marker; Redis down → keep trading from memory, degraded + counted,
everything rewritten when it returns; Redis flushed → rewritten without a restart; paper and
live never touch each other's keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from strategy_helpers import (
    FEES,
    SnapshotResponder,
    open_gate,
    publish_books,
    publish_exec,
    reverted_books,
    round_trip,
    settings_for,
    wait_exec_seq,
    wide_books,
)

from arb_common.bus import Bus
from arb_common.money import to_str
from arb_common.runtime import Readiness
from arb_common.testing import TcpProxy, wait_until
from arb_strategy.app import StrategyService

pytestmark = pytest.mark.integration

HOT = {"hot_flush_s": 0.01, "hot_check_s": 0.2}


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
async def rds(redis_url: str, bus_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    keys = [k async for k in client.scan_iter(match=f"arb{bus_prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def hot_strategy(nats_url: str, prefix: str, redis_url: str, *, mode: str = "paper",
                       readiness: Readiness | None = None, **over: Any) -> StrategyService:
    settings = settings_for(nats_url, prefix, redis_url=redis_url, mode=mode, **{**HOT, **over})
    bus = Bus(nats_url, service="strategy", session=settings.session, mode=mode, prefix=prefix)
    await bus.connect()
    await bus.provision()
    svc = StrategyService(settings, bus, FEES, readiness=readiness)
    await svc.start()
    await asyncio.wait_for(svc.live_event.wait(), 15)
    return svc


async def stop(svc: StrategyService) -> None:
    await svc.stop()
    await svc.bus.close()


def key(prefix: str, *parts: str, mode: str = "paper") -> str:
    return ":".join((f"arb{prefix}", mode, "itest", *parts))


async def test_guard_cooldown_heartbeat_and_marker_are_written(
        md_bus: Bus, snapshots: SnapshotResponder, rds: aioredis.Redis, redis_url: str,
        nats_url: str, bus_prefix: str) -> None:
    await open_gate(md_bus)
    svc = await hot_strategy(nats_url, bus_prefix, redis_url, cooldown_s=30)
    try:
        await wait_until(lambda: svc.hot is not None and svc.hot.in_sync, what="hot in sync")
        assert await rds.exists(key(bus_prefix, "session", "strategy", "synced"))
        assert 0 < await rds.ttl(key(bus_prefix, "heartbeat", "strategy", "ts")) <= 30
        await publish_exec(md_bus, *round_trip("T1", prices=("60000", "60200", "60100", "60300")))
        await wait_exec_seq(svc, md_bus)
        guard_key = key(bus_prefix, "guard", "BTC-USDT", "state")

        async def realized() -> Any:
            return await rds.hget(guard_key, "realized")

        want = to_str(svc.guard.realized["BTC-USDT"])
        for _ in range(100):
            if await realized() == want:
                break
            await asyncio.sleep(0.02)
        guard = await rds.hgetall(guard_key)
        assert guard["realized"] == want and guard["exposure"] == "0"
        assert orjson.loads(guard["positions"]) == {"alpha": "0", "beta": "0"}
        assert await rds.ttl(guard_key) == -1  # guard state never expires
        daily = await rds.hgetall(key(bus_prefix, "guard", "_", "daily"))
        assert Decimal(str(daily["daily_pnl"])) == svc.guard.daily_pnl
        # open + close: the cooldown key expires when the cooldown ends
        await publish_books(md_bus, *wide_books(100))
        await wait_until(lambda: "BTC-USDT" in svc.engine.open_trades(), what="open")
        await wait_until(lambda: not svc.decider.publishing, what="open acknowledged")
        await publish_books(md_bus, *reverted_books(200))
        await wait_until(lambda: svc.engine.open_trades() == {}, what="closed")
        cooldown = key(bus_prefix, "cooldown", "BTC-USDT", "until")
        for _ in range(100):
            if await rds.exists(cooldown):
                break
            await asyncio.sleep(0.02)
        until = svc.engine.symbols["BTC-USDT"].cooldown_until_ns
        assert await rds.get(cooldown) == str(until)
        assert 28_000 < await rds.pttl(cooldown) <= 30_000
    finally:
        await stop(svc)


async def test_redis_down_keeps_trading_reports_it_and_rewrites_everything_when_back(
        md_bus: Bus, snapshots: SnapshotResponder, rds: aioredis.Redis, redis_url: str,
        nats_url: str, bus_prefix: str) -> None:
    target = urlsplit(redis_url)
    readiness = Readiness()
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        svc = await hot_strategy(nats_url, bus_prefix, proxy.url_for(redis_url),
                                 readiness=readiness)
        try:
            assert svc.hot is not None
            await wait_until(lambda: svc.hot is not None and svc.hot.in_sync, what="in sync")
            errors = metric("arb_strategy_redis_errors_total")
            proxy.cut()
            await publish_exec(md_bus, *round_trip("T1", prices=("60000", "60200", "60100",
                                                                  "60300")))
            await wait_exec_seq(svc, md_bus)  # trading state moves on from memory
            assert svc.memory.stats.portfolio().trades == 1
            await wait_until(lambda: metric("arb_strategy_redis_errors_total") > errors,
                             what="redis error counted")
            ready, body = readiness.report()
            assert ready and "unreachable" in body["degraded"]["redis"]
            assert await rds.hget(key(bus_prefix, "guard", "BTC-USDT", "state"),
                                  "realized") == "0"  # written before the outage
            proxy.restore()
            await wait_until(lambda: svc.hot is not None and svc.hot.in_sync, what="back",
                             timeout=10)
            assert "degraded" not in readiness.report()[1]
            got = await rds.hget(key(bus_prefix, "guard", "BTC-USDT", "state"),
                                 "realized")
            assert got == to_str(svc.guard.realized["BTC-USDT"])
        finally:
            await stop(svc)


async def test_redis_flushed_is_rewritten_without_a_restart(
        md_bus: Bus, snapshots: SnapshotResponder, rds: aioredis.Redis, redis_url: str,
        nats_url: str, bus_prefix: str) -> None:
    svc = await hot_strategy(nats_url, bus_prefix, redis_url)
    try:
        await wait_until(lambda: svc.hot is not None and svc.hot.in_sync, what="in sync")
        assert svc.hot is not None
        rewrites = svc.hot.rewrites
        keys = [k async for k in rds.scan_iter(match=f"arb{bus_prefix}:*")]
        await rds.delete(*keys)
        for _ in range(100):
            if await rds.exists(key(bus_prefix, "guard", "ETH-USDT", "state")):
                break
            await asyncio.sleep(0.05)
        assert svc.hot.rewrites == rewrites + 1
        assert sorted([k async for k in rds.scan_iter(match=f"arb{bus_prefix}:*")]) == \
            sorted(keys)
    finally:
        await stop(svc)


async def test_paper_and_live_never_read_or_write_each_others_keys(
        md_bus: Bus, snapshots: SnapshotResponder, rds: aioredis.Redis, redis_url: str,
        nats_url: str, bus_prefix: str) -> None:
    paper = await hot_strategy(nats_url, bus_prefix, redis_url)
    await wait_until(lambda: paper.hot is not None and paper.hot.in_sync, what="paper synced")
    # paper's marker is there, but live reads only its own: it writes its state from scratch
    live = await hot_strategy(nats_url, bus_prefix, redis_url, mode="live")
    try:
        assert paper.hot is not None and live.hot is not None
        await wait_until(lambda: live.hot is not None and live.hot.in_sync, what="live synced")
        assert live.hot.rewrites == 1
        assert await rds.exists(key(bus_prefix, "guard", "BTC-USDT", "state", mode="live"))
        live_keys = sorted([k async for k in rds.scan_iter(match=f"arb{bus_prefix}:live:*")])
        paper_keys = [k async for k in rds.scan_iter(match=f"arb{bus_prefix}:paper:*")]
        assert paper_keys and live_keys
        # paper's namespace lost: only paper rewrites; live neither notices nor is touched
        paper_rewrites, live_rewrites = paper.hot.rewrites, live.hot.rewrites
        await rds.delete(*paper_keys)
        await wait_until(lambda: paper.hot is not None and paper.hot.rewrites > paper_rewrites,
                         what="paper rewrote")
        await asyncio.sleep(0.5)  # a few of live's checks
        assert live.hot.rewrites == live_rewrites
        assert sorted([k async for k in rds.scan_iter(match=f"arb{bus_prefix}:live:*")]) == \
            live_keys
    finally:
        await stop(live)
        await stop(paper)

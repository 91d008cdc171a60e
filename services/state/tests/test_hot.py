"""Redis hot state on a real Redis: written after commits, rebuilt after data loss,
memory fallback and re-sync when Redis comes back (own key prefix, never FLUSHALL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import redis.asyncio as aioredis
from sqlalchemy.engine import Engine
from state_helpers import event, fill

from arb_common.positions import PositionState
from arb_common.runtime import Readiness
from arb_state.hot import REDIS_ERRORS, HotState
from arb_state.ingest import PositionUpdate, ingest_batch
from arb_state.queries import load_positions

DEAD_REDIS = "redis://127.0.0.1:1/0"


async def _loader_for(engine: Engine):  # type: ignore[no-untyped-def]
    async def loader(sessions: set[tuple[str, str]]) -> list[PositionUpdate]:
        return load_positions(engine, sessions)

    return loader


async def test_position_written_then_rebuilt_after_keys_vanish(
    engine: Engine, redis_url: str, redis_prefix: str
) -> None:
    result = ingest_batch(engine, [event(fill("t1", "buy", "1.5", "100", fee="0.1"))])
    hot = HotState(redis_url, mode="paper", session="s1", prefix=redis_prefix,
                   loader=await _loader_for(engine))
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await hot.resync()
        await hot.write(result.positions)
        key = f"{redis_prefix}:paper:s1:position:BTC-USDT:alpha"
        assert key == hot.position_key("paper", "s1", "BTC-USDT", "alpha")
        stored = await raw.hgetall(key)
        assert stored["quantity"] == "1.5" and stored["avg_price"] == "100"
        assert stored["realized_pnl"] == "-0.1"
        assert await raw.ttl(key) == -1  # no expiry

        # FLUSHDB-equivalent on our own keys only
        ours = [k async for k in raw.scan_iter(match=f"{redis_prefix}:*")]
        await raw.delete(*ours)
        await hot.check()  # the watch loop notices the missing marker and re-syncs
        assert (await raw.hgetall(key))["quantity"] == "1.5"
    finally:
        await hot.close()
        await raw.aclose()


async def test_redis_down_keeps_memory_reports_degraded_and_resyncs(
    engine: Engine, redis_url: str, redis_prefix: str
) -> None:
    readiness = Readiness()
    hot = HotState(DEAD_REDIS, mode="paper", session="s1", prefix=redis_prefix,
                   readiness=readiness, loader=await _loader_for(engine))
    errors_before = REDIS_ERRORS._value.get()
    assert not await hot.resync()
    result = ingest_batch(engine, [event(fill("t1", "sell", "2", "50"))])
    await hot.write(result.positions)  # never raises
    await hot.check()
    ready, body = readiness.report()
    assert ready is True and "redis" in body["degraded"]
    assert REDIS_ERRORS._value.get() > errors_before
    assert hot.memory[("paper", "s1", "alpha", "BTC-USDT")].state.quantity == Decimal(-2)

    # Redis "returns": the next check re-syncs everything from PostgreSQL.
    await hot.redis.aclose()
    hot.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await hot.check()
    _, body = readiness.report()
    assert "degraded" not in body
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = await raw.hgetall(hot.position_key("paper", "s1", "BTC-USDT", "alpha"))
        assert stored["quantity"] == "-2"
    finally:
        await raw.aclose()
        await hot.close()


async def test_memory_only_resync_without_loader(redis_url: str, redis_prefix: str) -> None:
    hot = HotState(redis_url, mode="live", session="s9", prefix=redis_prefix)
    p = PositionUpdate("live", "s9", "beta", "ETH-USDT", PositionState(Decimal(3)),
                       datetime.now(UTC))
    await hot.write([p])
    assert await hot.resync()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = await raw.hgetall(f"{redis_prefix}:live:s9:position:ETH-USDT:beta")
        assert stored["quantity"] == "3"
    finally:
        await raw.aclose()
        await hot.close()

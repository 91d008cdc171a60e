"""Redis hot state: positions under ``Keyspace(mode, session).key("position", symbol, venue)``.

Each position is a hash (``quantity``, ``avg_price``, ``realized_pnl``, ``fees``,
``updated_at``, ``venue``, ``symbol``) without TTL. Writes happen after the ledger commit.
If Redis is unreachable the service keeps going from memory, reports ``degraded`` on
``/readyz``, counts ``arb_state_redis_errors_total``, and a background loop re-syncs the
positions from PostgreSQL when Redis answers again. The same loop notices a Redis that lost
its data (restart without persistence, FLUSHDB) by a missing marker key, and re-syncs too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from arb_common.keyspace import Keyspace
from arb_common.money import to_str
from arb_common.runtime import Readiness

from .analytics import EquityPoint
from .ingest import PositionUpdate

logger = logging.getLogger(__name__)

REDIS_ERRORS = Counter("arb_state_redis_errors_total", "Redis operations that failed")

Loader = Callable[[set[tuple[str, str]]], Awaitable[list[PositionUpdate]]]
PosKey = tuple[str, str, str, str]


def position_fields(p: PositionUpdate) -> dict[str, str]:
    return {
        "venue": p.venue,
        "symbol": p.symbol,
        "quantity": to_str(p.state.quantity),
        "avg_price": to_str(p.state.avg_price),
        "realized_pnl": to_str(p.state.realized_pnl),
        "fees": to_str(p.state.fees),
        "updated_at": p.updated_at.isoformat(),
    }


class HotState:
    def __init__(
        self,
        redis_url: str,
        *,
        mode: str,
        session: str,
        prefix: str = "arb",
        readiness: Readiness | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
        )
        self.prefix = prefix
        self.own = Keyspace(mode, session, prefix)
        self.readiness = readiness
        self.loader = loader
        self.memory: dict[PosKey, PositionUpdate] = {}
        self.sessions: set[tuple[str, str]] = {(mode, session)}
        self.in_sync = False  # False until a full re-sync from PostgreSQL succeeded

    def keyspace(self, mode: str, session: str) -> Keyspace:
        return Keyspace(mode, session, self.prefix)

    def position_key(self, mode: str, session: str, symbol: str, venue: str) -> str:
        return self.keyspace(mode, session).key("position", symbol, venue)

    @property
    def marker_key(self) -> str:
        return self.own.key("session", "state", "synced")

    # ------------------------------------------------------------ writes
    async def write(self, updates: Iterable[PositionUpdate]) -> None:
        """Remember ``updates`` and write them to Redis (never raises)."""
        batch = list(updates)
        for p in batch:
            self.memory[(p.mode, p.session, p.venue, p.symbol)] = p
            self.sessions.add((p.mode, p.session))
        if not batch or not self.in_sync:
            return  # the re-sync loop writes everything from PostgreSQL once Redis is back
        try:
            await self._hset(batch)
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def _hset(self, batch: list[PositionUpdate]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in batch:
                try:
                    key = self.position_key(p.mode, p.session, p.symbol, p.venue)
                except ValueError as exc:
                    logger.warning("position not cached session=%s error=%s", p.session, exc)
                    continue
                pipe.hset(key, mapping=position_fields(p))  # type: ignore[arg-type]
            await pipe.execute()

    async def write_equity(self, points: Iterable[EquityPoint]) -> None:
        """Latest equity per session (``equity:_:latest``, no TTL) and this service's
        heartbeat (``heartbeat:state:ts``, TTL from the policy); never raises."""
        if not self.in_sync:
            return  # nothing to rewrite later: the next point supersedes this one
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for pt in points:
                    pipe.hset(self.keyspace(pt.mode, pt.session).key("equity", "_", "latest"),
                              mapping=pt.hot_fields())  # type: ignore[arg-type]
                hb = self.own.key("heartbeat", "state", "ts")
                pipe.set(hb, str(time.time_ns()), ex=Keyspace.ttl("heartbeat"))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        REDIS_ERRORS.inc()
        if self.in_sync:
            logger.warning("redis unavailable, serving from memory error=%r", exc)
        self.in_sync = False
        if self.readiness is not None:
            self.readiness.degrade("redis", f"unreachable, serving from memory: {exc!r}"[:200])

    # ------------------------------------------------------------ re-sync
    async def resync(self) -> bool:
        """Write every known position from PostgreSQL (or memory) to Redis; True on success."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        positions: list[PositionUpdate]
        if self.loader is not None:
            try:
                positions = await self.loader(set(self.sessions))
            except Exception as exc:  # noqa: BLE001 - PostgreSQL down: try again later
                logger.warning("position re-sync postponed: ledger unavailable error=%r", exc)
                return False
        else:
            positions = list(self.memory.values())
        try:
            for i in range(0, len(positions), 500):
                await self._hset(positions[i : i + 500])
            await self.redis.set(self.marker_key, datetime.now().astimezone().isoformat())
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        was = self.in_sync
        self.in_sync = True
        if self.readiness is not None:
            self.readiness.degrade("redis", None)
        if not was:
            logger.info("redis hot state re-synced positions=%d", len(positions))
        return True

    async def check(self) -> None:
        """One round of the watch loop: re-sync if out of sync or if Redis lost our marker."""
        if self.in_sync:
            try:
                if await self.redis.exists(self.marker_key):
                    return
                logger.warning("redis lost the hot state (marker missing), re-syncing")
            except (RedisError, OSError) as exc:
                self._failed(exc)
                return
            self.in_sync = False
        await self.resync()

    async def run(self, stopping: asyncio.Event, interval: float = 2.0) -> None:
        while not stopping.is_set():
            await self.check()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval)
            except TimeoutError:
                pass

    async def close(self) -> None:
        try:
            await self.redis.aclose()
        except (RedisError, OSError):
            pass

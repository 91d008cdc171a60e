"""Redis hot state of one owner: a write-behind mirror of in-memory state (never read back).

The owner keeps its state in memory and says *what changed* (:meth:`HotMirror.mark`, a few
tokens such as a symbol: cheap, on the hot path). A background task (:meth:`HotMirror.run`)
renders the marked tokens into :class:`HotEntry` values through the owner's ``render``
callback and writes them in one pipeline, at most every ``flush_s`` (changes in between are
coalesced). Rendering happens at flush time, so the newest state is written.

Failure handling (ARCHITECTURE.md, "State model"):

- Redis unreachable: the owner keeps working from memory; the mirror counts the error, marks
  ``/readyz`` degraded with the reason, and stops writing increments.
- Every ``check_s`` it writes a heartbeat and checks its marker key (``session:<owner>:synced``);
  when Redis is back, or lost the data (marker missing: FLUSHDB, restart without persistence),
  it rewrites *everything* (``render(None)``) and sets the marker again — no restart needed.

Keys come from :class:`arb_common.keyspace.Keyspace` (mode and session are part of every key,
so two modes never touch each other's state); TTLs from ``TTL_POLICY`` per domain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from .keyspace import Keyspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotEntry:
    """One key's desired content: a hash (``fields``), a string (``value``), or absent."""

    key: str
    fields: Mapping[str, str] | None = None
    value: str | None = None
    ttl_s: int | None = None  # relative expiry (from the domain's TTL policy)
    expire_at_ms: int | None = None  # absolute expiry (e.g. a cooldown's end), wins over ttl

    @property
    def absent(self) -> bool:
        return self.fields is None and self.value is None


Render = Callable[[set[str] | None], Iterable[HotEntry]]  # tokens (None: everything) -> entries


class HotMirror:
    def __init__(
        self,
        redis_url: str,
        *,
        keyspace: Keyspace,
        owner: str,
        render: Render,
        errors: Counter,
        degrade: Callable[[str, str | None], None] | None = None,  # Readiness.degrade
        flush_s: float = 0.05,
        check_s: float = 2.0,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
        )
        self.keyspace = keyspace
        self.owner = owner
        self.render = render
        self.errors = errors
        self.degrade = degrade
        self.flush_s = flush_s
        self.check_s = check_s
        self._now_ms = now_ms or _wall_ms
        self.in_sync = False  # False until a full rewrite succeeded (and after any error)
        self.enabled = False  # the owner turns it on once its state is worth writing
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._check_now = False
        self.flushes = 0
        self.rewrites = 0

    @property
    def marker_key(self) -> str:
        return self.keyspace.key("session", self.owner, "synced")

    @property
    def heartbeat_key(self) -> str:
        return self.keyspace.key("heartbeat", self.owner, "ts")

    def enable(self) -> None:
        """Start mirroring (the owner's state is now worth writing): a full write follows at
        once, then increments."""
        self.enabled = True
        self._check_now = True
        self._wake.set()

    # ------------------------------------------------------------ hot path
    def mark(self, *tokens: str) -> None:
        """Something under ``tokens`` changed: written within ``flush_s`` (O(1), no I/O)."""
        self._dirty.update(tokens)
        self._wake.set()

    # ------------------------------------------------------------ writes
    async def flush(self) -> bool:
        """Write what was marked since the last flush; False if Redis failed."""
        if not self._dirty or not self.in_sync:
            return self.in_sync
        tokens, self._dirty = self._dirty, set()
        try:
            await self._write(self.render(tokens))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self.flushes += 1
        return True

    async def rewrite(self) -> bool:
        """Write everything, the heartbeat and the marker; True when Redis is in sync."""
        self._dirty.clear()  # rendered in full below
        try:
            await self._write(self.render(None))
            await self._heartbeat()
            await self.redis.set(self.marker_key, str(self._now_ms()))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        was, self.in_sync = self.in_sync, True
        self.rewrites += 1
        if self.degrade is not None:
            self.degrade("redis", None)
        if not was:
            logger.info("redis hot state written owner=%s keyspace=%s", self.owner,
                        self.keyspace.pattern())
        return True

    async def _write(self, entries: Iterable[HotEntry]) -> None:
        now = self._now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            n = 0
            for e in entries:
                n += 1
                if e.absent or (e.expire_at_ms is not None and e.expire_at_ms <= now):
                    pipe.delete(e.key)
                    continue
                if e.fields is not None:
                    pipe.hset(e.key, mapping=dict(e.fields))  # type: ignore[arg-type]
                else:
                    pipe.set(e.key, e.value or "")
                if e.expire_at_ms is not None:
                    pipe.pexpireat(e.key, e.expire_at_ms)
                elif e.ttl_s is not None:
                    pipe.expire(e.key, e.ttl_s)
                # (no TTL: keys written without one never get one; no PERSIST needed)
            if n:
                await pipe.execute()

    async def _heartbeat(self) -> None:
        ttl = Keyspace.ttl("heartbeat") or 30
        await self.redis.set(self.heartbeat_key, str(self._now_ms() * 1_000_000), ex=ttl)

    def _failed(self, exc: BaseException) -> None:
        self.errors.inc()
        if self.in_sync:
            logger.warning("redis unavailable, keeping state in memory owner=%s error=%r",
                           self.owner, exc)
        self.in_sync = False
        if self.degrade is not None:
            self.degrade("redis", f"unreachable, state kept in memory: {exc!r}"[:200])

    # ------------------------------------------------------------ watch
    async def check(self) -> None:
        """Heartbeat, and a full rewrite if out of sync or the marker is gone."""
        if not self.enabled:
            return
        if self.in_sync:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(self.heartbeat_key, str(self._now_ms() * 1_000_000),
                             ex=Keyspace.ttl("heartbeat") or 30)
                    pipe.exists(self.marker_key)
                    _, marker = await pipe.execute()
                if marker:
                    return
                logger.warning("redis lost the hot state (marker missing) owner=%s; rewriting",
                               self.owner)
            except (RedisError, OSError) as exc:
                self._failed(exc)
                return
            self.in_sync = False
        await self.rewrite()

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush marked changes (coalesced) and run :meth:`check` every ``check_s``, until
        ``stopping`` is set or the task is cancelled."""
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        while not stopping.is_set():
            if self._check_now or loop.time() >= next_check:
                self._check_now = False
                await self.check()
                next_check = loop.time() + self.check_s
            if self.enabled and self.in_sync:
                await self.flush()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_check -
                                                                      loop.time()))
            except TimeoutError:
                continue
            self._wake.clear()
            await asyncio.sleep(self.flush_s)  # coalesce what changes meanwhile

    async def close(self) -> None:
        try:
            await self.redis.aclose()
        except (RedisError, OSError):
            pass


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000

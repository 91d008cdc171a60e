"""Fixtures of the state tests: a migrated ledger, a sync engine, a unique Redis prefix."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).parent))

from state_helpers import migrate  # noqa: E402


@pytest.fixture
def ledger_url(fresh_database: str) -> str:
    """A fresh database migrated to head."""
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    eng = create_engine(ledger_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
async def redis_prefix(redis_url: str, bus_prefix: str):  # type: ignore[no-untyped-def]
    """``arb<bus_prefix>``: this test's Redis keys; only they are deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"arb{bus_prefix}"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()

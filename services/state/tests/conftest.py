"""Fixtures of the state tests: a migrated ledger, a sync engine, a unique Redis prefix."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).parent))

from state_helpers import migrate  # noqa: E402

from arb_common.runtime import ServiceRuntime  # noqa: E402
from arb_common.settings import Mode  # noqa: E402
from arb_state.api import register  # noqa: E402
from arb_state.config import StateSettings  # noqa: E402
from arb_state.ingest import IngestResult, LedgerWriter, ingest_batch  # noqa: E402


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


@pytest.fixture(params=["sqlalchemy", "pipeline"])
def ingest(request: pytest.FixtureRequest,
           engine: Engine) -> Callable[[Sequence[Any]], IngestResult]:
    """Both ledger writers: the SQLAlchemy one and the service's async pipeline one."""
    if request.param == "sqlalchemy":
        return lambda batch: ingest_batch(engine, batch)
    url = engine.url.render_as_string(hide_password=False)

    def pipeline(batch: Sequence[Any]) -> IngestResult:
        async def run() -> IngestResult:
            writer = LedgerWriter(url)
            try:
                return await writer.ingest(batch)
            finally:
                await writer.close()

        return asyncio.run(run())

    return pipeline


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    """The query API (``/api``, paper mode, session s1) over the test ledger."""
    settings = StateSettings(session="s1", mode=Mode.paper)
    rt = ServiceRuntime("state", settings)
    register(rt.app, lambda: engine, settings)
    transport = httpx.ASGITransport(app=rt.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://state") as c:
        yield c


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

"""The service in-process on real JetStream (prefixed streams), PostgreSQL and Redis:
events published as the executor does end up in the ledger, the API and Redis; a ledger
outage loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import create_engine
from state_helpers import fill, order

from arb_common.bus import Bus
from arb_common.messages import Book
from arb_common.runtime import ServiceRuntime
from arb_state.app import DB_ERRORS, StateService
from arb_state.config import StateSettings
from arb_state.ingest import LedgerWriter

Probe = Callable[[], Awaitable[bool]]


async def eventually(probe: Probe, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture
async def running(  # type: ignore[no-untyped-def]
    ledger_url: str, redis_url: str, redis_prefix: str, nats_url: str, bus_prefix: str,
    cleanup_streams,
) -> AsyncIterator[tuple[StateService, httpx.AsyncClient, Bus]]:  # fmt: skip
    settings = StateSettings(
        database_url=ledger_url, redis_url=redis_url, nats_url=nats_url, bus_prefix=bus_prefix,
        session="s1", mode="paper", redis_check_s=0.2, pg_check_s=0.2, equity_interval_s=0.2,
    )  # fmt: skip
    rt = ServiceRuntime("state", settings)
    svc = StateService(rt)
    await svc.start(rt)
    pub = Bus(nats_url, service="executor", session="s1", mode="paper", prefix=bus_prefix)
    await pub.connect()
    transport = httpx.ASGITransport(app=rt.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://state") as client:
            yield svc, client, pub
    finally:
        await pub.close()
        rt.stopping.set()
        for fn in reversed(rt._shutdown):
            await fn()
        for task in rt._tasks:
            task.cancel()
        await asyncio.gather(*rt._tasks, return_exceptions=True)


async def _items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def test_published_events_reach_ledger_api_and_redis_exactly_once(
    running: tuple[StateService, httpx.AsyncClient, Bus], redis_url: str
) -> None:
    svc, client, pub = running
    s = pub.subjects
    buy = fill("t1", "buy", "1", "100", fee="0.1", coid="c1")
    sell = fill("t2", "sell", "1", "110", fee="0.11", venue="beta", coid="c2")
    await pub.publish(s.order("alpha", "BTC-USDT"), order("c1", "ACKED"), "order:c1:ACKED:0")
    await pub.publish(s.fill("alpha", "BTC-USDT"), buy, "fill:alpha:t1")
    await pub.publish(s.fill("alpha", "BTC-USDT"), buy, "fill:alpha:t1")  # dropped by JetStream
    await pub.publish(s.fill("alpha", "BTC-USDT"), buy, "fill:alpha:t1:again")  # by the ledger
    await pub.publish(s.order("alpha", "BTC-USDT"), order("c1", "FILLED", "1"), "order:c1:FILLED:1")
    await pub.publish(s.order("alpha", "BTC-USDT"), order("c1", "ACKED"), "order:c1:ACKED:0:late")
    await pub.publish(s.fill("beta", "BTC-USDT"), sell, "fill:beta:t2")

    async def all_in() -> bool:
        return len(await _items(client, "/api/fills")) == 2 and any(
            p["venue"] == "beta" for p in await _items(client, "/api/positions"))

    await eventually(all_in)
    fills = await _items(client, "/api/fills", venue="alpha")
    assert [f["venue_trade_id"] for f in fills] == ["t1"]
    assert (fills[0]["mode"], fills[0]["session"], fills[0]["fee"]) == ("paper", "s1", "0.1")
    orders = await _items(client, "/api/orders")
    assert [(o["client_order_id"], o["status"], o["filled_quantity"]) for o in orders] == [
        ("c1", "FILLED", "1")]
    positions = {p["venue"]: p for p in await _items(client, "/api/positions")}
    assert positions["alpha"]["quantity"] == "1" and positions["beta"]["quantity"] == "-1"
    sessions = await _items(client, "/api/sessions")
    assert [(x["id"], x["mode"], x["status"]) for x in sessions] == [("s1", "paper", "running")]

    assert svc.hot is not None
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = await raw.hgetall(svc.hot.position_key("paper", "s1", "BTC-USDT", "alpha"))
    finally:
        await raw.aclose()
    assert stored["quantity"] == "1" and stored["realized_pnl"] == "-0.1"

    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = (await client.get("/metrics")).text
    assert 'arb_state_events_ingested_total{kind="fill"}' in metrics
    assert "arb_state_fills_duplicate_total" in metrics
    assert 'arb_state_positions{symbol="BTC-USDT",venue="alpha"} 1.0' in metrics

    # Equity = realized (fees: -0.1 - 0.11) + unrealized at the book mids (105 on both
    # venues: long 1 @ 100 +5, short 1 @ 110 +5).
    for venue in ("alpha", "beta"):
        book = Book(venue=venue, symbol="BTC-USDT", seq=1, bids=[(Decimal(104), Decimal(1))],
                    asks=[(Decimal(106), Decimal(1))])
        await pub.publish_fast(s.book(venue, "BTC-USDT"), book, f"book:{venue}:1")

    async def equity_exported() -> bool:
        text = (await client.get("/metrics")).text
        return ('arb_state_unrealized_pnl{symbol="BTC-USDT"} 10.0' in text
                and "\narb_state_equity 9.79\n" in text)

    await eventually(equity_exported)


async def test_ledger_outage_naks_then_catches_up_without_loss_or_duplicates(
    running: tuple[StateService, httpx.AsyncClient, Bus],
) -> None:
    svc, client, pub = running
    good = svc.engine
    assert good is not None
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none",
                         connect_args={"connect_timeout": 1})
    errors_before = DB_ERRORS._value.get()
    good_writer = svc.writer
    svc.engine = dead  # PostgreSQL "goes down" (for the pool and the batch writer's connection)
    svc.writer = LedgerWriter("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_timeout=1)
    try:
        await pub.publish(pub.subjects.fill("alpha", "BTC-USDT"), fill("t9", "buy", "2", "10"),
                          "fill:alpha:t9")

        async def failing() -> bool:
            r = await client.get("/readyz")
            return DB_ERRORS._value.get() > errors_before and r.status_code == 503

        await eventually(failing)
        body = (await client.get("/readyz")).json()
        assert body["checks"]["postgres"]["ok"] is False
        assert body["checks"]["postgres"]["detail"].startswith("down")
    finally:
        svc.engine = good  # PostgreSQL "returns"
        svc.writer = good_writer
        dead.dispose()

    async def caught_up() -> bool:
        return [f["venue_trade_id"] for f in await _items(client, "/api/fills")] == ["t9"]

    await eventually(caught_up)
    await eventually(lambda: _ready(client))
    positions = await _items(client, "/api/positions")
    assert [p["quantity"] for p in positions] == ["2"]


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_poison_event_goes_to_dlq_and_does_not_block_its_batch(
    running: tuple[StateService, httpx.AsyncClient, Bus],
) -> None:
    _, client, pub = running
    s = pub.subjects
    sub = await pub.nc.subscribe(s.dlq("EXEC"))
    await pub.publish(s.fill("alpha", "BTC-USDT"), fill("bad", "buy", "0", "10"), "fill:alpha:bad")
    await pub.publish(s.fill("alpha", "BTC-USDT"), fill("ok", "buy", "1", "10"), "fill:alpha:ok")

    async def good_one_in() -> bool:
        return [f["venue_trade_id"] for f in await _items(client, "/api/fills")] == ["ok"]

    await eventually(good_one_in)
    msg = await sub.next_msg(timeout=10)
    assert msg.headers is not None and msg.headers["Arb-Dlq-Reason"].startswith("ledger:")
    await sub.unsubscribe()

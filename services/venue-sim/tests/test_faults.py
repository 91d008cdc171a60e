"""Injected faults: 5xx, rejects, lost responses, latency, expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from arb_common.clock import ManualClock
from arb_venue_sim.faults import Faults, ResponseLost
from arb_venue_sim.venue import Venue

SignedCall = Callable[..., Awaitable[httpx.Response]]
MARKET_BUY = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}


async def test_http_5xx_answers_503_plain_text_and_executes_nothing(
        call: SignedCall, client: httpx.AsyncClient, alpha: Venue) -> None:
    alpha.faults.add("http_5xx", None, None)
    resp = await call("POST", "/api/v3/order", **MARKET_BUY, newClientOrderId="x1")
    assert resp.status_code == 503
    assert resp.text == "Service Unavailable"
    assert resp.headers["content-type"].startswith("text/plain")
    assert (await client.get("/api/v3/depth?symbol=BTCUSDT")).status_code == 503
    assert alpha.engine.records == []
    alpha.faults.clear()
    assert (await client.get("/api/v3/depth?symbol=BTCUSDT")).status_code == 200


async def test_reject_orders_answers_2010_and_records_the_reject(call: SignedCall,
                                                                 alpha: Venue) -> None:
    alpha.faults.add("reject_orders", None, None)
    resp = await call("POST", "/api/v3/order", **MARKET_BUY, newClientOrderId="rj1")
    assert resp.status_code == 400
    assert resp.json()["code"] == -2010
    (rec,) = alpha.engine.records
    assert rec.status == "REJECTED" and rec.client_order_id == "rj1"
    assert alpha.engine.account.free("BTC") == 10


async def test_lost_response_still_executes_the_order(call: SignedCall, alpha: Venue) -> None:
    alpha.faults.add("lose_order_responses", None, None)
    with pytest.raises(ResponseLost):
        await call("POST", "/api/v3/order", **MARKET_BUY, newClientOrderId="lost1")
    alpha.faults.clear()
    got = await call("GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="lost1")
    assert got.json()["status"] == "FILLED"
    assert alpha.engine.account.get("BTC").free > 10


async def test_lost_response_on_a_real_server_closes_the_connection(
        running: Any, signer: Callable[..., str]) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("lose_order_responses", 1.0, 5)
    headers = {"X-MBX-APIKEY": venue.creds.api_key,
               "content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=running.url("alpha"), timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            await http.post("/api/v3/order", headers=headers,
                            content=signer(venue, {**MARKET_BUY, "newClientOrderId": "lost2"}))
        venue.faults.clear()
        got = await http.get("/api/v3/order?" + signer(
            venue, {"symbol": "BTCUSDT", "origClientOrderId": "lost2"}), headers=headers)
    assert got.status_code == 200 and got.json()["status"] == "FILLED"


async def test_order_latency_delays_the_answer_not_the_execution(call: SignedCall,
                                                                 alpha: Venue) -> None:
    alpha.faults.add("order_latency_ms", 300, None)
    task = asyncio.create_task(call("POST", "/api/v3/order", **MARKET_BUY))
    await asyncio.sleep(0.1)
    assert not task.done()
    assert len(alpha.engine.trades) >= 1  # already executed
    started = time.monotonic()
    resp = await task
    assert resp.status_code == 200 and time.monotonic() - started > 0.1


def test_faults_expire_after_duration_and_validate_input() -> None:
    clock = ManualClock()
    faults = Faults("alpha", clock)
    faults.add("http_5xx", None, 2.0)
    assert faults.fires("http_5xx")
    clock.advance(1.9)
    assert [f["kind"] for f in faults.to_json()] == ["http_5xx"]
    clock.advance(0.2)
    assert not faults.fires("http_5xx") and faults.to_json() == []
    for kind, value, duration in [("nope", None, None), ("order_latency_ms", None, None),
                                  ("reject_orders", 2.0, None), ("http_5xx", None, -1)]:
        with pytest.raises(ValueError):
            faults.add(kind, value, duration)


def test_probability_faults_fire_about_as_often_as_asked() -> None:
    faults = Faults("alpha", ManualClock(), seed=1)
    faults.add("reject_orders", 0.3, None)
    hits = sum(faults.fires("reject_orders") for _ in range(2000))
    assert 450 < hits < 750

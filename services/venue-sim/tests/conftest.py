"""Fixtures: an in-process simulator (ASGI clients) and real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from arb_venue_sim.app import bind, venue_server
from arb_venue_sim.config import SimSettings
from arb_venue_sim.signing import sign
from arb_venue_sim.venue import Simulator, Venue

SignedCall = Callable[..., Awaitable[httpx.Response]]


def make_settings(**overrides: Any) -> SimSettings:
    base: dict[str, Any] = {"profile": "dev", "control_token": None, "sim_seed": 7,
                            "venues": "alpha,beta", "symbols": "BTC-USDT,ETH-USDT,SOL-USDT",
                            "http_host": "127.0.0.1", "sim_fee_asset": "quote"}
    base.update(overrides)
    return SimSettings(**base)


@pytest.fixture
def settings() -> SimSettings:
    return make_settings()


@pytest.fixture
def sim(settings: SimSettings) -> Simulator:
    return Simulator(settings)


@pytest.fixture
def alpha(sim: Simulator) -> Venue:
    return sim.venues["alpha"]


@pytest.fixture
async def client(alpha: Venue) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=alpha.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://alpha") as c:
        yield c


def signed_query(venue: Venue, params: dict[str, Any], *, ts: int | None = None) -> str:
    payload = urlencode({**params, "timestamp": ts or int(time.time() * 1000),
                         "recvWindow": 5000})
    return payload + "&signature=" + sign(venue.creds.api_secret, payload)


@pytest.fixture
def call(client: httpx.AsyncClient, alpha: Venue) -> SignedCall:
    """``await call("POST", "/api/v3/order", symbol=..., ...)``: a signed request."""

    async def _call(method: str, path: str, **params: Any) -> httpx.Response:
        qs = signed_query(alpha, params)
        headers = {"X-MBX-APIKEY": alpha.creds.api_key}
        if method == "POST":
            headers["content-type"] = "application/x-www-form-urlencoded"
            return await client.post(path, content=qs, headers=headers)
        return await client.request(method, f"{path}?{qs}", headers=headers)

    return _call


@dataclass
class Running:
    sim: Simulator
    ports: dict[str, int]

    def url(self, venue: str) -> str:
        return f"http://127.0.0.1:{self.ports[venue]}"

    def ws(self, venue: str) -> str:
        return f"ws://127.0.0.1:{self.ports[venue]}"


@pytest.fixture
async def running(sim: Simulator) -> AsyncIterator[Running]:
    """Every venue served by a real uvicorn server on an ephemeral loopback port, with the
    market ticking and the WebSocket flushers running."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in sim.background()]
    servers, ports = [], {}
    for venue in sim.venues.values():
        sock = bind("127.0.0.1", 0)
        ports[venue.id] = sock.getsockname()[1]
        server = venue_server(venue, "127.0.0.1", ports[venue.id])
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        servers.append(server)
    for _ in range(200):
        if all(s.started for s in servers):
            break
        await asyncio.sleep(0.01)
    yield Running(sim, ports)
    for server in servers:
        server.should_exit = True
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def signer() -> Callable[..., str]:
    """``signer(venue, {params})`` → a signed query string."""
    return signed_query

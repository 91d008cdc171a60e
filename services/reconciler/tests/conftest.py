"""Reconciler test helpers: a migrated ledger database and a bus on real engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from arb_common.bus import Bus
from arb_executor.venue_client import VenueOrder

STATE_ALEMBIC = Path(__file__).resolve().parents[2] / "state" / "alembic.ini"


@pytest.fixture
def ledger_url(fresh_database: str) -> str:
    """``fresh_database`` migrated to head with the state service's Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(STATE_ALEMBIC))
    cfg.attributes["url"] = fresh_database
    command.upgrade(cfg, "head")
    return fresh_database


@pytest.fixture
async def bus(nats_url: str, bus_prefix: str, cleanup_streams: None) -> AsyncIterator[Bus]:
    b = Bus(nats_url, service="reconciler", session="test", mode="live", prefix=bus_prefix)
    await b.connect()
    await b.provision()
    try:
        yield b
    finally:
        await b.close()


class FakeVenue:
    """In-memory venue account (stands in for the simulator in unit-level runs)."""

    def __init__(self) -> None:
        self.open: list[VenueOrder] = []
        self.all: dict[str, VenueOrder] = {}
        self.bal: dict[str, tuple[Decimal, Decimal]] = {"USDT": (Decimal("1000"), Decimal(0))}
        self.fail: Exception | None = None

    async def open_orders(self) -> list[VenueOrder]:
        if self.fail:
            raise self.fail
        return list(self.open)

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        return dict(self.bal)

    async def query(self, symbol: str, coid: str) -> VenueOrder | None:
        return self.all.get(coid)


async def wait_until(pred: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


class SimHandle:
    """The real venue simulator (``arb_venue_sim``) running in this event loop."""

    def __init__(self, sim: Any, configs: dict[str, Any]) -> None:
        self.sim = sim
        self.configs = configs  # venue id -> arb_common.venues.VenueConfig (ephemeral ports)

    def records(self, venue: str) -> list[dict[str, Any]]:
        return [o.record_json() for o in self.sim.venues[venue].engine.records]

    def fault(self, venue: str, kind: str, value: float | None = None,
              duration_s: float | None = None) -> None:
        self.sim.venues[venue].faults.add(kind, value, duration_s)


@pytest.fixture
async def venue_sim() -> AsyncIterator[SimHandle]:
    """venue-sim in-process on ephemeral ports: real Binance REST with signed requests."""
    from arb_common.venues import VenueConfig
    from arb_venue_sim.app import bind, venue_server
    from arb_venue_sim.config import SimSettings
    from arb_venue_sim.venue import Simulator

    sim = Simulator(SimSettings(venues="alpha,beta", sim_base_port=1))
    tasks = [asyncio.create_task(coro, name=name) for name, coro in sim.background()]
    servers, configs = [], {}
    for v in sim.venues.values():
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = venue_server(v, "127.0.0.1", port)
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        configs[v.id] = VenueConfig(
            id=v.id, dialect="binance", rest_url=f"http://127.0.0.1:{port}",
            ws_url=f"ws://127.0.0.1:{port}/stream", api_key=v.creds.api_key,
            api_secret=v.creds.api_secret, taker_fee=str(v.engine.taker_fee))
    await wait_until(lambda: all(s.started for s in servers), 10)
    try:
        yield SimHandle(sim, configs)
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

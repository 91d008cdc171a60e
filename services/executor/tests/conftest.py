"""Executor test helpers on a real NATS (root fixtures ``nats_url``, ``bus_prefix``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import pytest
from arb_common.bus import Bus


@pytest.fixture
async def bus(nats_url: str, bus_prefix: str, cleanup_streams: None) -> AsyncIterator[Bus]:
    b = Bus(nats_url, service="executor", session="test", mode="paper", prefix=bus_prefix)
    await b.connect()
    await b.provision()
    try:
        yield b
    finally:
        await b.close()


async def stream_messages(bus: Bus, stream: str, subject: str) -> list[tuple[Any, Any]]:
    """Everything currently stored on ``subject`` in ``stream`` (decoded), oldest first."""
    from arb_common.messages import decode

    sub = await bus.js.pull_subscribe(subject, stream=bus.subjects.stream_name(stream))
    out: list[tuple[Any, Any]] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                break
            for m in msgs:
                out.append(decode(m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


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

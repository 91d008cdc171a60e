"""The real simulator running inside a test's event loop, on ephemeral loopback ports.

Used by the other services' integration tests (executor, reconciler, market-data), so every
one of them talks to the same Binance-dialect REST/WebSocket code that ``make run`` uses::

    async with running_simulator(SimSettings(venues="alpha,beta")) as sim:
        client = VenueClient(sim.configs["alpha"])   # signed REST through ccxt
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from arb_common.venues import VenueConfig

from .app import bind, venue_server
from .config import SimSettings
from .venue import Simulator


@dataclass
class RunningSim:
    sim: Simulator
    configs: dict[str, VenueConfig]  # venue id -> config with the ephemeral URLs and dev keys
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    def records(self, venue: str) -> list[dict[str, Any]]:
        """Every order the venue received, as the control API lists them."""
        return [o.record_json() for o in self.sim.venues[venue].engine.records]

    def fault(self, venue: str, kind: str, value: float | None = None,
              duration_s: float | None = None, reason: str | None = None) -> None:
        """Inject a fault as ``POST /control/venues/{venue}/faults`` does (faults.py)."""
        self.sim.venues[venue].faults.add(kind, value, duration_s, reason)

    def clear_faults(self, venue: str) -> None:
        self.sim.venues[venue].faults.clear()


@asynccontextmanager
async def running_simulator(settings: SimSettings | None = None,
                            host: str = "127.0.0.1") -> AsyncIterator[RunningSim]:
    sim = Simulator(settings or SimSettings(venues="alpha,beta"))
    tasks = {name: asyncio.create_task(coro, name=name) for name, coro in sim.background()}
    servers, configs = [], {}
    for v in sim.venues.values():
        sock = bind(host, 0)
        port = sock.getsockname()[1]
        server = venue_server(v, host, port)
        servers.append(server)
        tasks[f"http-{v.id}"] = asyncio.create_task(server.serve(sockets=[sock]))
        configs[v.id] = VenueConfig(
            id=v.id, dialect="binance", rest_url=f"http://{host}:{port}",
            ws_url=f"ws://{host}:{port}/stream", api_key=v.creds.api_key,
            api_secret=v.creds.api_secret, taker_fee=str(v.engine.taker_fee))
    deadline = asyncio.get_running_loop().time() + 10
    while not all(s.started for s in servers):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("simulated venues did not start within 10 s")
        await asyncio.sleep(0.02)
    try:
        yield RunningSim(sim, configs, tasks)
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.sleep(0.2)
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)

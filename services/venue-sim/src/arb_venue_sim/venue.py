"""One simulated venue: its account engine, faults, WebSocket hub and ASGI app; and the
``Simulator`` holding every venue over one shared ``Market``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastapi import FastAPI

from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.runtime import OrjsonResponse

from .binance_rest import RestRoutes, register_rest
from .binance_ws import WsHub, register_ws
from .book import DepthEvent
from .config import Credentials, SimSettings, venue_credentials
from .faults import ASGIApp, FaultMiddleware, Faults
from .market import Market
from .matching import Engine
from .metrics import BOOK_UPDATES

logger = logging.getLogger(__name__)

TICK_GROUPS = 5  # see Simulator.tick_groups


@dataclass
class Venue:
    id: str
    index: int
    port: int
    host: str
    creds: Credentials
    market: Market
    engine: Engine
    faults: Faults
    hub: WsHub
    clock: Clock
    app: FastAPI = field(init=False)
    asgi: ASGIApp = field(init=False)

    def __post_init__(self) -> None:
        self.app = FastAPI(title=f"venue-sim {self.id} (binance spot)",
                           default_response_class=OrjsonResponse, openapi_url=None,
                           docs_url=None, redoc_url=None)
        register_ws(self.app, self.hub)
        routes = RestRoutes(self.id, self.app)
        register_rest(routes, self)
        self.asgi = FaultMiddleware(routes, self.faults)
        self.faults.on_change.append(self._fault_added)

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/stream"

    def _fault_added(self, kind: str) -> None:
        if kind == "drop_ws":
            self.hub.drop_all()

    def publish(self, event: DepthEvent) -> None:
        BOOK_UPDATES.labels(self.id, self.market.by_wire[event.symbol].symbol).inc()
        self.hub.on_depth(event)

    def describe(self) -> dict[str, Any]:
        """``GET /control/venues`` entry (docs/CONTRACTS.md)."""
        return {
            "id": self.id, "dialect": "binance", "rest_url": self.rest_url,
            "ws_url": self.ws_url, "api_key": self.creds.api_key,
            "api_secret": self.creds.api_secret, "taker_fee": str(self.engine.taker_fee),
            "maker_fee": str(self.engine.maker_fee),
            "symbols": list(self.market.specs),
        }


class Simulator:
    """Every venue over one market; ``tick`` advances simulated time."""

    def __init__(self, settings: SimSettings, clock: Clock = SYSTEM_CLOCK,
                 market: Market | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.market = market or Market.from_settings(settings)
        self.venues: dict[str, Venue] = {}
        start: dict[str, Decimal] = settings.start_balances()
        for index, vid in enumerate(settings.venue_list):
            faults = Faults(vid, clock, settings.sim_seed)
            hub = WsHub(vid, self.market, faults, clock, settings.sim_ws_queue_max)
            engine = Engine(vid, self.market, start, taker_fee=settings.sim_taker_fee,
                            maker_fee=settings.sim_maker_fee, fee_asset=settings.sim_fee_asset,
                            clock=clock)
            venue = Venue(id=vid, index=index, port=settings.sim_base_port + index,
                          host=settings.advertise_host,
                          creds=venue_credentials(vid, settings.sim_seed),
                          market=self.market, engine=engine, faults=faults, hub=hub,
                          clock=clock)
            engine.publish = venue.publish
            self.venues[vid] = venue

    def tick(self, dt: float, symbols: list[str] | None = None) -> None:
        """Move the books of ``symbols`` (default: all) ``dt`` seconds forward, publish the
        changes, fill resting orders."""
        for event in self.market.step(dt, symbols):
            self.venues[event.venue].publish(event)
        wires = (list(self.market.by_wire) if symbols is None
                 else [self.market.specs[s].wire for s in symbols])
        for venue in self.venues.values():
            for wire in wires:
                venue.engine.on_book_moved(wire)

    def tick_groups(self) -> list[list[str]]:
        """The symbols in :data:`TICK_GROUPS` groups, each ticked in its own slot of the
        interval: one tick of every book is milliseconds of CPU (10 symbols x 2 venues:
        2.5 ms), during which no order is answered; a group is a fifth of that."""
        symbols = list(self.market.models)
        n = max(1, min(TICK_GROUPS, len(symbols)))
        return [symbols[i::n] for i in range(n)]

    async def run_market(self) -> None:
        """Tick at ``ARB_SIM_BOOK_UPDATES_PER_S`` (or ``ARB_SIM_TICK_INTERVAL_MS``) forever:
        every symbol once per interval, one group of symbols at a time."""
        interval = self.settings.tick_interval_s
        groups = self.tick_groups()
        slot = interval / len(groups)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        i = 0
        while True:
            next_at += slot
            delay = next_at - loop.time()
            if delay < -1.0:  # fell far behind (suspended): do not burst to catch up
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))
            self.tick(interval, groups[i])
            i = (i + 1) % len(groups)

    def background(self) -> list[tuple[str, Any]]:
        """Coroutines to run: the market ticker and each venue's WebSocket flusher."""
        out: list[tuple[str, Any]] = [("market", self.run_market())]
        out += [(f"ws-flush-{v.id}", v.hub.run()) for v in self.venues.values()]
        return out

"""Test helper for the services that trade or read venues through the executor's adapter
(executor, reconciler): signed clients for a running simulator's venues, markets loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

from arb_common.venues import VenueConfig

from .venue_client import VenueClient

C = TypeVar("C", bound=VenueClient)


@asynccontextmanager
async def venue_clients(configs: Mapping[str, VenueConfig], cls: type[C],
                        timeout_s: float = 1.0) -> AsyncIterator[dict[str, C]]:
    out = {v: cls(cfg, timeout_s=timeout_s) for v, cfg in configs.items()}
    try:
        for c in out.values():
            await c.load_markets()
        yield out
    finally:
        for c in out.values():
            await c.close()

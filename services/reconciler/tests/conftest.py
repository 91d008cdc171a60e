"""Reconciler test helpers: a migrated ledger database and a bus on real engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from arb_common.bus import Bus
from arb_common.testing import connected_bus
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
    async with connected_bus(nats_url, bus_prefix, "reconciler", mode="live") as b:
        yield b


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



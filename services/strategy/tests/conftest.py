"""Fixtures of the strategy tests (real NATS; no fakes of the engines).

``snapshots`` stands in for the state service's ``ctl.state.snapshot_save`` / ``_load``: it
keeps the documents in a list (checksum verified on save, latest returned on load). The real
:class:`arb_state.snapshots.SnapshotStore` on PostgreSQL is used in test_recovery_ledger.py.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from strategy_helpers import SnapshotResponder  # noqa: E402

from arb_common.bus import Bus  # noqa: E402
from arb_common.testing import connected_bus  # noqa: E402


@pytest.fixture
async def md_bus(nats_url: str, bus_prefix: str, cleanup_streams: None) -> AsyncIterator[Bus]:
    """The other services' side of the bus (books, fills, gate, control requests)."""
    async with connected_bus(nats_url, bus_prefix, "market-data", session="itest") as bus:
        yield bus


@pytest.fixture
async def snapshots(md_bus: Bus) -> AsyncIterator[SnapshotResponder]:
    responder = SnapshotResponder(md_bus)
    await responder.start()
    yield responder
    await responder.stop()

"""Small helpers for the services' tests (no fakes: real engines only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .bus import Bus


async def wait_until(pred: Callable[[], object], timeout: float = 10.0, *, step: float = 0.02,
                     what: str = "condition") -> None:
    """Poll ``pred`` until it is truthy; fail the test naming ``what`` after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(step)


@asynccontextmanager
async def connected_bus(nats_url: str, prefix: str, service: str = "test", *,
                        mode: str = "paper", session: str = "test") -> AsyncIterator[Bus]:
    """A connected bus with this test's streams provisioned; closed afterwards."""
    bus = Bus(nats_url, service=service, session=session, mode=mode, prefix=prefix)
    await bus.connect()
    await bus.provision()
    try:
        yield bus
    finally:
        await bus.close()

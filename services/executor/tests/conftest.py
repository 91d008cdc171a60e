"""Executor test helpers on a real NATS (root fixtures ``nats_url``, ``bus_prefix``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import pytest

from arb_common.bus import Bus
from arb_common.testing import connected_bus


@pytest.fixture
async def bus(nats_url: str, bus_prefix: str, cleanup_streams: None) -> AsyncIterator[Bus]:
    async with connected_bus(nats_url, bus_prefix, "executor", mode="paper") as b:
        yield b


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



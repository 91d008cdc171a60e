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

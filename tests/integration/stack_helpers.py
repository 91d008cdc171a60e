"""What the whole-stack tests share: a running stack on the test's engines, and a NATS
request helper for operator control."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import redis

from arbctl.stack import ExternalUrls, Stack, free_port_offset


@contextmanager
def running_stack(home: Path, *, mode: str, nats_url: str, database_url: str, redis_url: str,
                  bus_prefix: str, env: Mapping[str, str] | None = None,
                  monkeypatch: pytest.MonkeyPatch | None = None) -> Iterator[Stack]:
    """The stack as processes (``arbctl.stack.Stack``) on external engines; stopped and this
    deployment's Redis keys removed afterwards. ``env`` goes to every process."""
    for key, value in (env or {}).items():
        assert monkeypatch is not None, "env needs monkeypatch"
        monkeypatch.setenv(key, value)
    s = Stack(home, mode=mode, session_mode="clean", port_offset=free_port_offset(),
              external=ExternalUrls(nats_url, database_url, redis_url), bus_prefix=bus_prefix)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"arb{bus_prefix}:*"))
        if keys:
            r.delete(*keys)


def nats_request(nats_url: str, subject: str, body: dict[str, Any], timeout: float = 10) -> Any:
    async def go() -> Any:
        nc = await nats.connect(nats_url)
        try:
            msg = await nc.request(subject, orjson.dumps(body), timeout=timeout)
            return orjson.loads(msg.data)
        finally:
            await nc.close()

    return asyncio.run(go())

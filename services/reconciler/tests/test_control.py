"""ctl.reconciler.ack over real NATS: a bad request gets a clear answer, never a crash."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from arb_common.bus import Bus
from arb_common.settings import CommonSettings
from arb_reconciler.control import Control

pytestmark = pytest.mark.integration


class Gate:
    ready, halted, reason = True, "external_trade seen", ""

    async def acknowledge(self) -> str:
        was, self.halted = self.halted, ""
        return was


async def ask(bus: Bus, body: Any) -> dict[str, Any]:
    reply = await bus.nc.request(bus.subjects.ctl("reconciler", "ack"), orjson.dumps(body),
                                 timeout=5)
    return orjson.loads(reply.data)  # type: ignore[no-any-return]


async def test_ack_refuses_a_venue_that_is_not_a_known_name(bus: Bus) -> None:
    gate = Gate()
    await Control(CommonSettings(), {"alpha": gate}).subscribe(bus)  # type: ignore[dict-item]
    for bad in ({"venue": ["alpha"]}, {"venue": "gamma"}, {}, ["alpha"]):
        got = await ask(bus, bad)
        assert got["ok"] is False and "'venue' must be one of alpha" in got["error"], bad
    assert await ask(bus, {"venue": "alpha"}) == {"ok": True, "venue": "alpha",
                                                  "was": "external_trade seen"}

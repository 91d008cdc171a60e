"""Operator control of the reconciler (core NATS request/reply on ``ctl.reconciler.<verb>``).

- ``ack`` ``{"venue": "alpha"}`` (``arbctl ack alpha``) → ``{"ok": true, "venue", "was"}``:
  an operator has looked at what halted new entries on the venue (external activity,
  balance drift); entries resume and the next balance observation is the new baseline.
  Needs the control token outside the dev profile.
- ``status`` ``{}`` → ``{"ok": true, "venues": {venue: {"ready", "halted", "reason"}}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.msg import Msg

from arb_common.bus import Bus
from arb_common.runtime import token_ok
from arb_common.settings import CommonSettings

if TYPE_CHECKING:
    from .app import VenueGate

logger = logging.getLogger(__name__)


class Control:
    def __init__(self, settings: CommonSettings, gates: Mapping[str, VenueGate]) -> None:
        self.settings = settings
        self.gates = gates

    async def subscribe(self, bus: Bus) -> None:
        await bus.nc.subscribe(bus.subjects.ctl("reconciler", "ack"), cb=self.on_ack)
        await bus.nc.subscribe(bus.subjects.ctl("reconciler", "status"), cb=self.on_status)

    async def on_ack(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if not token_ok(self.settings, headers.get("Authorization")):
            await _reply(msg, {"ok": False, "error": "control token required"})
            return
        try:
            req = orjson.loads(msg.data) if msg.data else {}
            venue = req.get("venue") if isinstance(req, dict) else None
            if not isinstance(venue, str) or venue not in self.gates:
                raise ValueError(f"'venue' must be one of {', '.join(self.gates)}")
        except ValueError as exc:
            await _reply(msg, {"ok": False, "error": str(exc)})
            return
        was = await self.gates[venue].acknowledge()
        logger.warning("operator acknowledged venue=%s was=%s", venue, was or "not halted")
        await _reply(msg, {"ok": True, "venue": venue, "was": was})

    async def on_status(self, msg: Msg) -> None:
        await _reply(msg, {"ok": True, "venues": {
            v: {"ready": g.ready, "halted": bool(g.halted), "reason": g.halted or g.reason}
            for v, g in self.gates.items()}})


async def _reply(msg: Msg, body: dict[str, Any]) -> None:
    await msg.respond(orjson.dumps(body))

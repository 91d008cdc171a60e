"""Reconciliation gate: no order goes to a venue whose last ``VenueReady`` is not ready.

Start order matters: subscribe to ``sys.ready.*`` (core) FIRST, then read the last message of
each ``sys.ready.<venue>`` from the RECON stream, so no change between the two is missed.
Updates are applied only if not older than what we hold (envelope ``ts``), because the
stored last message and a live one can arrive in either order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from arb_common.errors import TemporaryError
from arb_common.messages import Envelope, VenueReady

logger = logging.getLogger(__name__)

GATE_OPEN = Gauge("arb_executor_gate_open", "1 when the venue's reconciliation gate is open",
                  ["venue"])


class GateClosed(TemporaryError):
    """A venue is not (yet) reconciled: the intent must wait (nak with delay)."""


@dataclass(frozen=True)
class GateState:
    ready: bool
    reason: str
    run_id: str
    ts: int


class Gate:
    def __init__(self, venues: list[str]) -> None:
        self.venues = list(venues)
        self._state: dict[str, GateState] = {
            v: GateState(False, "no sys.ready message yet", "", 0) for v in self.venues
        }
        for v in self.venues:
            GATE_OPEN.labels(v).set(0)

    def apply(self, env: Envelope, msg: VenueReady) -> None:
        cur = self._state.get(msg.venue)
        if cur is None:
            return  # a venue we do not trade
        if env.ts < cur.ts:
            return
        self._state[msg.venue] = GateState(msg.ready, msg.reason, msg.run_id, env.ts)
        GATE_OPEN.labels(msg.venue).set(1 if msg.ready else 0)
        if msg.ready != cur.ready:
            logger.info("gate %s venue=%s run_id=%s reason=%s",
                        "open" if msg.ready else "closed", msg.venue, msg.run_id, msg.reason)

    async def on_ready(self, env: Envelope, payload: Any) -> None:
        if isinstance(payload, VenueReady):
            self.apply(env, payload)

    async def start(self, bus: Any) -> None:
        """Subscribe first, then load the last known state of every venue."""
        await bus.subscribe(bus.subjects.any("sys.ready.*"), self.on_ready, where="sys.ready")
        for v in self.venues:
            last = await bus.last_message("RECON", bus.subjects.ready(v))
            if last is not None:
                env, payload = last
                await self.on_ready(env, payload)

    def is_open(self, venue: str) -> bool:
        st = self._state.get(venue)
        return st is not None and st.ready

    def check(self, *venues: str) -> None:
        closed = [f"{v}: {self._state[v].reason or 'not ready'}" if v in self._state
                  else f"{v}: not a configured venue" for v in venues if not self.is_open(v)]
        if closed:
            raise GateClosed("gate closed " + "; ".join(closed))

    def report(self) -> tuple[bool, str]:
        parts = []
        for v in self.venues:
            st = self._state[v]
            parts.append(f"{v}=open" if st.ready else f"{v}=closed ({st.reason or 'not ready'})")
        return all(self._state[v].ready for v in self.venues), ", ".join(parts)

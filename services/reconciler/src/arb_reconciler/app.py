"""Reconciler runtime: the startup gate per venue, then periodic drift checks.

Per venue, at start: ``VenueReady(ready=False, reason="reconciling")`` first; then a recon run
(retried with backoff while the venue or the database cannot be queried in time: the gate
stays closed and ``/readyz`` says why); on success the ``ReconReport`` then
``VenueReady(ready=True)``. Afterwards a run every ``ARB_RECON_INTERVAL_S`` records drift and
updates metrics; a failing periodic run is reported (``ok=false``) but does not close the
gate (the executor resolves its own unknown outcomes by client order id).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Mapping

from prometheus_client import Gauge

from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.messages import VenueReady
from arb_common.runtime import ServiceRuntime, connect_bus
from arb_common.settings import Mode, load_settings
from arb_common.venues import discover
from arb_executor.venue_client import VenueClient

from .config import ReconcilerSettings
from .reconcile import Ledger, Reconciler, VenueReader

logger = logging.getLogger(__name__)

SERVICE = "reconciler"
VENUE_READY = Gauge("arb_reconciler_venue_ready", "1 once the venue is reconciled", ["venue"])


def new_run_id(clock: Clock = SYSTEM_CLOCK) -> str:
    return f"{clock.now_ms()}-{secrets.token_hex(3)}"


class VenueGate:
    """Startup gate + periodic loop for one venue."""

    def __init__(self, venue: str, bus: Bus, rec: Reconciler, *, interval_s: float,
                 retry_max_s: float) -> None:
        self.venue = venue
        self.bus = bus
        self.rec = rec
        self.interval_s = interval_s
        self.retry_max_s = retry_max_s
        self.ready = False
        self.reason = "reconciling"
        VENUE_READY.labels(venue).set(0)

    async def _ready(self, ready: bool, run_id: str, reason: str = "") -> None:
        await self.bus.publish(
            self.bus.subjects.ready(self.venue),
            VenueReady(venue=self.venue, ready=ready, run_id=run_id, reason=reason),
            f"ready:{self.venue}:{run_id}:{int(ready)}")

    async def startup(self) -> None:
        run_id = new_run_id()
        await self._ready(False, run_id, "reconciling")  # close the gate before anything else
        delay = 0.5
        while True:
            try:
                await self.rec.run(self.venue, run_id)
                break
            except Exception as exc:  # noqa: BLE001 - ReconFailed or bus trouble: retry
                self.reason = f"reconciliation failed, retrying: {exc}"[:300]
                logger.warning("recon startup failed venue=%s run_id=%s error=%s",
                               self.venue, run_id, exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.retry_max_s)
                run_id = new_run_id()
        await self._ready(True, run_id)
        self.ready, self.reason = True, ""
        VENUE_READY.labels(self.venue).set(1)
        logger.info("venue reconciled, gate open venue=%s run_id=%s", self.venue, run_id)

    async def loop(self) -> None:
        await self.startup()
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.rec.run(self.venue, new_run_id())
            except Exception as exc:  # noqa: BLE001 - reported; the next run tries again
                logger.warning("periodic recon failed venue=%s error=%s", self.venue, exc)


def readiness(gates: Mapping[str, VenueGate]) -> tuple[bool, str]:
    ok = all(g.ready for g in gates.values())
    return ok, ", ".join(f"{v}=ready" if g.ready else f"{v}=not ready ({g.reason})"
                         for v, g in gates.items())


async def start(rt: ServiceRuntime) -> None:
    s = rt.settings
    assert isinstance(s, ReconcilerSettings)
    clients: dict[str, VenueClient] = {}
    ledger = Ledger(s.database_url, s.mode.value, timeout_s=s.db_timeout_s)

    async def close() -> None:
        for c in clients.values():
            await c.close()
        ledger.close()

    rt.on_shutdown(close)
    rt.readiness.set("venues", False, "starting")
    bus: Bus = await connect_bus(rt)
    cfgs = await discover(s.venue_list, s.venue_sim_url)
    for v in s.venue_list:
        clients[v] = VenueClient(cfgs[v], timeout_s=s.venue_timeout_s)
    readers: dict[str, VenueReader] = dict(clients)
    rec = Reconciler(bus, ledger, readers, query_venue_orders=s.mode is Mode.live,
                     venue_timeout_s=s.venue_timeout_s, db_timeout_s=s.db_timeout_s)
    gates = {v: VenueGate(v, bus, rec, interval_s=s.recon_interval_s, retry_max_s=s.retry_max_s)
             for v in s.venue_list}
    rt.readiness.probe("venues", lambda: readiness(gates))
    rt.info_extra["venues"] = lambda: readiness(gates)[1]
    for v, g in gates.items():
        rt.spawn(g.loop(), f"recon:{v}")


def main() -> None:
    settings = load_settings(ReconcilerSettings)
    ServiceRuntime(SERVICE, settings).run(start)



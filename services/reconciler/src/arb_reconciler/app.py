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
from collections.abc import Callable, Mapping

from prometheus_client import Gauge

from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.messages import VenueReady
from arb_common.runtime import ServiceRuntime, connect_bus
from arb_common.settings import Mode, load_settings
from arb_common.venues import discover

from .audit import AuditPolicy
from .config import ReconcilerSettings
from .control import Control
from .reconcile import Ledger, Reconciler, VenueReader
from .trades import AuditClient

logger = logging.getLogger(__name__)

SERVICE = "reconciler"
VENUE_READY = Gauge("arb_reconciler_venue_ready", "1 once the venue is reconciled", ["venue"])


def new_run_id(clock: Clock = SYSTEM_CLOCK) -> str:
    return f"{clock.now_ms()}-{secrets.token_hex(3)}"


class VenueGate:
    """Startup gate + periodic loop for one venue."""

    def __init__(self, venue: str, bus: Bus, rec: Reconciler, *, interval_s: float,
                 retry_max_s: float, inflight_s: float = 3.0, max_queries: int = 20,
                 on_halt: Callable[[str, str], None] | None = None) -> None:
        self.venue = venue
        self.bus = bus
        self.rec = rec
        self.interval_s = interval_s
        self.retry_max_s = retry_max_s
        self.inflight_s = inflight_s
        self.max_queries = max_queries
        self.ready = False
        self.reason = "reconciling"
        self.halted = ""  # why new entries are halted, as last published
        self.on_halt = on_halt or (lambda venue, reason: None)
        self._lock = asyncio.Lock()  # one run of this venue at a time
        VENUE_READY.labels(venue).set(0)

    async def _ready(self, ready: bool, run_id: str, reason: str = "",
                     halted: bool = False) -> None:
        await self.bus.publish(
            self.bus.subjects.ready(self.venue),
            VenueReady(venue=self.venue, ready=ready, run_id=run_id, reason=reason,
                       halted=halted),
            f"ready:{self.venue}:{run_id}:{int(ready)}:{int(halted)}")

    async def sync_halt(self, run_id: str) -> None:
        """Publish the venue's halt state when it changed (entries stop / resume)."""
        reason = self.rec.audit.halt_reason(self.venue)
        if reason == self.halted or not self.ready:
            return
        await self._ready(True, run_id, reason, halted=bool(reason))
        self.halted = reason
        self.on_halt(self.venue, reason)
        logger.warning("venue entries %s venue=%s reason=%s",
                       "HALTED" if reason else "resumed", self.venue, reason)

    async def acknowledge(self) -> str:
        async with self._lock:
            was = self.rec.audit.acknowledge(self.venue)
            await self.sync_halt(new_run_id())
            return was

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
        self.halted = self.rec.audit.halt_reason(self.venue)
        await self._ready(True, run_id, self.halted, halted=bool(self.halted))
        self.on_halt(self.venue, self.halted)
        self.ready, self.reason = True, ""
        VENUE_READY.labels(self.venue).set(1)
        logger.info("venue reconciled, gate open venue=%s run_id=%s halted=%s", self.venue,
                    run_id, self.halted or "no")

    async def loop(self) -> None:
        """After the startup run, every ``inflight_s``: the in-flight check, or a full run
        when the open-orders interval (or the trade / balance audit) is due. Due times are
        kept on a fixed schedule, so the cadences do not stretch by the tick."""
        await self.startup()
        clock = asyncio.get_running_loop().time
        next_full = clock() + self.interval_s
        while True:
            await asyncio.sleep(self.inflight_s)
            run_id = new_run_id()
            try:
                async with self._lock:
                    if clock() >= next_full - self.inflight_s / 2 or self.rec.audit.due(
                            self.venue, slack_s=self.inflight_s / 2):
                        while next_full <= clock() + self.inflight_s / 2:
                            next_full += self.interval_s
                        await self.rec.run(self.venue, run_id, full=False)
                    else:
                        await self.rec.inflight(self.venue, self.max_queries, run_id)
                    await self.sync_halt(run_id)
            except Exception as exc:  # noqa: BLE001 - reported; the next run tries again
                logger.warning("periodic recon failed venue=%s error=%s", self.venue, exc)


def readiness(gates: Mapping[str, VenueGate]) -> tuple[bool, str]:
    ok = all(g.ready for g in gates.values())
    return ok, ", ".join(f"{v}=ready" if g.ready else f"{v}=not ready ({g.reason})"
                         for v, g in gates.items())


async def start(rt: ServiceRuntime) -> None:
    s = rt.settings
    assert isinstance(s, ReconcilerSettings)
    clients: dict[str, AuditClient] = {}
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
        clients[v] = AuditClient(cfgs[v], timeout_s=s.venue_timeout_s)
    readers: dict[str, VenueReader] = dict(clients)
    policy = AuditPolicy(
        external=s.recon_external_policy, lookback_s=s.recon_lookback_s,
        trades_interval_s=s.recon_trades_interval_s,
        balance_interval_s=s.recon_balance_interval_s,
        balance_tolerance=s.recon_balance_tolerance, stale_grace_s=s.recon_stale_grace_s,
        missing_grace_s=s.recon_missing_grace_s, inflight_min_age_s=s.recon_inflight_min_age_s)
    rec = Reconciler(bus, ledger, readers, query_venue_orders=s.mode is Mode.live,
                     venue_timeout_s=s.venue_timeout_s, db_timeout_s=s.db_timeout_s,
                     symbols=s.symbol_list, policy=policy)
    gates = {v: VenueGate(v, bus, rec, interval_s=s.recon_interval_s, retry_max_s=s.retry_max_s,
                          inflight_s=s.recon_inflight_interval_s, max_queries=s.recon_max_queries,
                          on_halt=lambda venue, why: rt.readiness.degrade(
                              f"halted.{venue}", f"new entries halted: {why}" if why else None))
             for v in s.venue_list}
    await Control(rt.settings, gates).subscribe(bus)
    rt.readiness.probe("venues", lambda: readiness(gates))
    rt.info_extra["venues"] = lambda: readiness(gates)[1]
    for v, g in gates.items():
        rt.spawn(g.loop(), f"recon:{v}")


def main() -> None:
    settings = load_settings(ReconcilerSettings)
    ServiceRuntime(SERVICE, settings).run(start)



"""One reconciliation run of one venue: venue REST truth vs the PostgreSQL ledger.

- venue-open orders missing from the ledger: ``unknown_open_order`` when the client order id
  is one of ours (``a`` + 30 hex, see ``arb_executor.legs.client_order_id``: sent but never
  recorded), else ``external_order`` (placed by hand or another system);
- ledger-open orders (NEW, SUBMITTED, ACKED, PARTIALLY_FILLED, UNKNOWN) not open on the venue:
  ``stale_order``; the venue is asked once by client order id and its answer recorded; when
  the venue knows a different state, a corrective ``OrderEvent`` (and its fills) is published
  with the contract msg ids, so the ledger catches up through the normal event path;
- open on both but with a different filled quantity: ``order_drift`` (corrected likewise);
- balances are stored as observations (``balances``, source ``venue``).

The run, its discrepancies and the balances are written in one transaction, then a
``ReconReport`` is published. Any venue or database call not answering within its timeout
fails the run with :class:`ReconFailed` (the caller keeps the gate closed and retries).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.errors import ArbError
from arb_common.ledger import (
    OPEN_STATUSES,
    Balance,
    DiscrepancyRow,
    Fill,
    Order,
    ReconRun,
    check_schema_current,
)
from arb_common.messages import Discrepancy, FillEvent, OrderEvent, ReconReport, Side
from arb_common.money import to_str
from arb_executor.legs import role_of
from arb_executor.venue_client import VenueOrder

from .audit import Audit, AuditPolicy

logger = logging.getLogger(__name__)

OUR_COID = re.compile(r"^[ah][0-9a-f]{30}$")  # legs "a...", hedges "h..." (arb_executor.legs)
AUDIT_MARGIN = timedelta(minutes=5)  # clock skew and ingest delay around the ledger's marks

RUN_SECONDS = Histogram("arb_reconciler_run_seconds", "Duration of one recon run", ["venue"],
                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DISCREPANCIES = Counter("arb_reconciler_discrepancies_total", "Differences found",
                        ["venue", "kind"])
RUNS = Counter("arb_reconciler_runs_total", "Recon runs", ["venue", "result"])
LAST_RUN = Gauge("arb_reconciler_last_run_timestamp_seconds",
                 "Unix time the venue's last recon run of this result ended", ["venue", "result"])
INFLIGHT_STATUSES = frozenset({"NEW", "SUBMITTED", "UNKNOWN"})
INFLIGHT = Gauge("arb_reconciler_inflight_orders", "Ledger orders in flight (NEW, SUBMITTED, "
                 "UNKNOWN)", ["venue"])
INFLIGHT_AGE = Gauge("arb_reconciler_inflight_oldest_seconds",
                     "Age of the oldest in-flight ledger order", ["venue"])
CORRECTIONS = Counter("arb_reconciler_corrections_total", "Corrective order events published",
                      ["venue"])


class ReconFailed(ArbError):
    """The venue or the ledger could not be queried in time: the run proves nothing."""


class VenueReader(Protocol):
    async def open_orders(self) -> list[VenueOrder]: ...

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]: ...

    async def query(self, symbol: str, coid: str) -> VenueOrder | None: ...


@dataclass(frozen=True)
class LedgerOrder:
    venue: str
    symbol: str
    client_order_id: str
    side: str
    quantity: Decimal
    filled_quantity: Decimal
    status: str
    venue_order_id: str | None = None
    intent_id: str = ""
    trade_id: str = ""
    created_at: datetime | None = None


def _ledger_order(o: Order) -> LedgerOrder:
    return LedgerOrder(o.venue, o.symbol, o.client_order_id, o.side, o.quantity,
                       o.filled_quantity, o.status, o.venue_order_id, o.intent_id, o.trade_id,
                       o.created_at)


class Ledger:
    """The few ledger reads/writes the reconciler needs (sync SQLAlchemy, run in a thread)."""

    def __init__(self, url: str, mode: str, *, timeout_s: float = 5.0) -> None:
        self.mode = mode
        self.engine = create_engine(url, pool_pre_ping=True,
                                    connect_args={"connect_timeout": max(1, int(timeout_s))})

    def check_schema(self) -> None:
        check_schema_current(self.engine)

    def open_orders(self, venue: str) -> list[LedgerOrder]:
        stmt = select(Order).where(Order.mode == self.mode, Order.venue == venue,
                                   Order.status.in_(OPEN_STATUSES))
        with Session(self.engine) as s:
            return [_ledger_order(o) for o in s.scalars(stmt)]

    def activity_since(self, venue: str, lookback: timedelta) -> datetime:
        """Where a trade audit must start: the oldest open order or the newest fill of this
        mode on ``venue`` (whichever is older), never further back than ``lookback``."""
        floor = datetime.now(UTC) - lookback
        with Session(self.engine) as s:
            oldest_open = s.scalar(select(func.min(Order.created_at)).where(
                Order.mode == self.mode, Order.venue == venue, Order.status.in_(OPEN_STATUSES)))
            newest_fill = s.scalar(select(func.max(Fill.ts)).where(
                Fill.mode == self.mode, Fill.venue == venue))
        marks = [t for t in (oldest_open, newest_fill) if t is not None]
        start = min(marks) - AUDIT_MARGIN if marks else floor
        return max(start, floor)

    def fill_ids(self, venue: str, since: datetime) -> set[str]:
        stmt = select(Fill.venue_trade_id).where(Fill.mode == self.mode, Fill.venue == venue,
                                                 Fill.ts >= since - AUDIT_MARGIN)
        with Session(self.engine) as s:
            return set(s.scalars(stmt))

    def orders_by_venue_id(self, venue: str, ids: list[str]) -> dict[str, LedgerOrder]:
        if not ids:
            return {}
        stmt = select(Order).where(Order.mode == self.mode, Order.venue == venue,
                                   Order.venue_order_id.in_(ids))
        with Session(self.engine) as s:
            return {str(o.venue_order_id): _ledger_order(o) for o in s.scalars(stmt)}

    def fills_after(self, venue: str, since: datetime) -> list[Fill]:
        """This mode's fills on ``venue`` executed after ``since`` (balance expectations)."""
        stmt = select(Fill).where(Fill.mode == self.mode, Fill.venue == venue, Fill.ts > since)
        with Session(self.engine) as s:
            rows = list(s.scalars(stmt))
            s.expunge_all()
            return rows

    def record(self, run: RunResult) -> None:
        now = datetime.now(UTC)
        with Session(self.engine) as s, s.begin():
            s.add(ReconRun(venue=run.venue, run_id=run.run_id, started_at=run.started_at,
                           duration_ms=run.duration_ms, ok=run.ok, error=run.error))
            for d in run.discrepancies:
                s.add(DiscrepancyRow(run_id=run.run_id, venue=run.venue, kind=d.kind,
                                     detail=d.detail, resolution=d.resolution,
                                     client_order_id=d.client_order_id, ts=now))
            for asset, (free, locked) in sorted(run.balances.items()):
                s.add(Balance(venue=run.venue, asset=asset, free=free, locked=locked,
                              source="venue", ts=now))

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class RunResult:
    venue: str
    run_id: str
    started_at: datetime
    duration_ms: float = 0.0
    ok: bool = True
    error: str = ""
    discrepancies: list[Discrepancy] = field(default_factory=list)
    balances: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    halted: str = ""  # why new entries on the venue are halted ("" = not halted)


def compare(venue_open: list[VenueOrder], ledger_open: list[LedgerOrder]
            ) -> tuple[list[Discrepancy], list[LedgerOrder], list[tuple[LedgerOrder, VenueOrder]]]:
    """Pure comparison: (discrepancies, ledger-open-not-on-venue, open-on-both-but-drifted)."""
    ledger_by_coid = {o.client_order_id: o for o in ledger_open}
    venue_by_coid = {o.client_order_id: o for o in venue_open}
    found: list[Discrepancy] = []
    for vo in venue_open:
        if vo.client_order_id in ledger_by_coid:
            continue
        ours = bool(OUR_COID.match(vo.client_order_id))
        found.append(Discrepancy(
            kind="unknown_open_order" if ours else "external_order",
            detail=(f"{'our order not in the ledger' if ours else 'external order'}: "
                    f"{vo.symbol} {vo.side} qty={to_str(vo.quantity)} "
                    f"filled={to_str(vo.filled)} venue_order_id={vo.venue_order_id}"),
            client_order_id=vo.client_order_id,
        ))
    stale = [lo for lo in ledger_open if lo.client_order_id not in venue_by_coid]
    drift = [(lo, venue_by_coid[lo.client_order_id]) for lo in ledger_open
             if lo.client_order_id in venue_by_coid
             and venue_by_coid[lo.client_order_id].filled != lo.filled_quantity]
    return found, stale, drift


class Reconciler:
    def __init__(
        self,
        bus: Bus,
        ledger: Ledger,
        venues: Mapping[str, VenueReader],
        *,
        query_venue_orders: bool = True,
        venue_timeout_s: float = 5.0,
        db_timeout_s: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        symbols: list[str] | None = None,
        policy: AuditPolicy | None = None,
    ) -> None:
        self.bus = bus
        self.ledger = ledger
        self.venues = venues
        self.query_venue_orders = query_venue_orders  # False in paper/shadow: not on the venue
        self.venue_timeout_s = venue_timeout_s
        self.db_timeout_s = db_timeout_s
        self.clock = clock
        self.symbols = list(symbols or [])
        self.policy = policy or AuditPolicy()
        self.audit = Audit(self)

    async def _venue(self, what: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.venue_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure: the run proves nothing
            raise ReconFailed(f"venue {what}: {exc!r}"[:300]) from exc

    async def _db(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.db_timeout_s)
        except Exception as exc:  # noqa: BLE001
            raise ReconFailed(f"database {what}: {exc!r}"[:300]) from exc

    async def run(self, venue: str, run_id: str, *, full: bool = True) -> ReconReport:
        """Reconcile ``venue`` once; publish the report; raise :class:`ReconFailed` on failure.

        ``full``: also audit the venue's trades and balances now (the startup run, and the
        periodic runs when their own intervals are due, see :class:`Audit`)."""
        t0 = self.clock.monotonic_ns()
        run = RunResult(venue, run_id, datetime.now(UTC))
        try:
            await self._db("schema", self.ledger.check_schema)
            client = self.venues[venue]
            venue_open = await self._venue("open orders", client.open_orders())
            run.balances = await self._venue("balances", client.balances())
            ledger_open = await self._db("open orders", self.ledger.open_orders, venue)
            found, stale, drift = compare(venue_open, ledger_open)
            found = [x for d in found if (x := (await self.audit.external_open(
                venue, d, venue_open) if d.kind == "external_order" else d)) is not None]
            for lo in stale:
                found.append(await self._check_stale(client, lo))
            for lo, vo in drift:
                found.append(await self._correct(lo, vo, "order_drift"))
            if self.query_venue_orders:
                found.extend(await self.audit.trades(venue, client, force=full))
                found.extend(await self.audit.balances(venue, run.balances, force=full))
            run.discrepancies = found
            run.halted = self.audit.halt_reason(venue)
            run.duration_ms = (self.clock.monotonic_ns() - t0) / 1e6
            await self._db("write", self.ledger.record, run)
        except ReconFailed as exc:
            run.ok, run.error = False, str(exc)
            run.duration_ms = (self.clock.monotonic_ns() - t0) / 1e6
            await self._finish(run)
            raise
        await self._finish(run)
        return self._report(run)

    async def inflight(self, venue: str, max_queries: int, run_id: str | None = None
                       ) -> list[Discrepancy]:
        """In-flight orders (NEW, SUBMITTED, UNKNOWN) of the ledger: counted and aged (metrics);
        those older than the executor's own resolution window (``inflight_min_age_s``) are
        asked about, at most ``max_queries`` (oldest first), and corrected or canceled like
        stale orders. What it finds is recorded and reported like any run's (``run_id``)."""
        t0 = self.clock.monotonic_ns()
        found = await self._inflight(venue, max_queries)
        if found and run_id is not None:
            run = RunResult(venue, run_id, datetime.now(UTC), discrepancies=found)
            run.duration_ms = (self.clock.monotonic_ns() - t0) / 1e6
            await self._db("write", self.ledger.record, run)
            await self._finish(run)
        return found

    async def _inflight(self, venue: str, max_queries: int) -> list[Discrepancy]:
        ledger_open = await self._db("open orders", self.ledger.open_orders, venue)
        now = datetime.now(UTC)
        inflight = sorted((o for o in ledger_open if o.status in INFLIGHT_STATUSES),
                          key=lambda o: o.created_at or now)
        ages = [(now - o.created_at).total_seconds() for o in inflight if o.created_at]
        INFLIGHT.labels(venue).set(len(inflight))
        INFLIGHT_AGE.labels(venue).set(max(ages) if ages else 0.0)
        if not self.query_venue_orders:
            return []
        due = [o for o in inflight if o.created_at is None
               or (now - o.created_at).total_seconds() > self.policy.inflight_min_age_s]
        client = self.venues[venue]
        found = [await self._check_stale(client, lo) for lo in due[:max_queries]]
        return [d for d in found if d.resolution != "waiting"]

    async def _finish(self, run: RunResult) -> None:
        RUN_SECONDS.labels(run.venue).observe(run.duration_ms / 1000)
        result = "ok" if run.ok else "failed"
        RUNS.labels(run.venue, result).inc()
        LAST_RUN.labels(run.venue, result).set(self.clock.now_ns() / 1e9)
        for d in run.discrepancies:
            DISCREPANCIES.labels(run.venue, d.kind).inc()
        if not run.ok:
            try:  # best effort: the database may be what failed
                await asyncio.wait_for(asyncio.to_thread(self.ledger.record, run), 2.0)
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not record failed run venue=%s error=%r", run.venue, exc)
        level = logging.INFO if run.ok else logging.WARNING
        logger.log(level, "recon run venue=%s run_id=%s ok=%s discrepancies=%d ms=%.1f error=%s",
                   run.venue, run.run_id, run.ok, len(run.discrepancies), run.duration_ms,
                   run.error)
        try:
            await self.bus.publish(self.bus.subjects.recon_report(), self._report(run),
                                   f"recon:{run.venue}:{run.run_id}")
        except Exception as exc:
            if run.ok:
                raise ReconFailed(f"bus: report not published: {exc!r}") from exc

    @staticmethod
    def _report(run: RunResult) -> ReconReport:
        return ReconReport(venue=run.venue, run_id=run.run_id, ok=run.ok,
                           duration_ms=run.duration_ms, discrepancies=run.discrepancies,
                           error=run.error)

    async def _check_stale(self, client: VenueReader, lo: LedgerOrder) -> Discrepancy:
        base = f"ledger {lo.status} filled={to_str(lo.filled_quantity)}; "
        if not self.query_venue_orders:
            return Discrepancy(kind="stale_order", detail=base + "not queried (simulated order)",
                               client_order_id=lo.client_order_id)
        try:
            vo = await asyncio.wait_for(client.query(lo.symbol, lo.client_order_id),
                                        self.venue_timeout_s)
        except Exception as exc:  # noqa: BLE001 - recorded; the next run asks again
            return Discrepancy(kind="stale_order", detail=base + f"venue query failed: {exc!r}",
                               resolution="unresolved", client_order_id=lo.client_order_id)
        if vo is None:
            return await self._cancel_missing(lo, base)
        return await self._correct(lo, vo, "stale_order")

    async def _cancel_missing(self, lo: LedgerOrder, base: str) -> Discrepancy:
        """Open in the ledger, unknown to the venue (one targeted query said so): CANCELED,
        once it is older than the grace period (an order being sent right now is not)."""
        age_s = ((datetime.now(UTC) - lo.created_at).total_seconds()
                 if lo.created_at is not None else float("inf"))
        if age_s < self.policy.stale_grace_s:
            return Discrepancy(kind="stale_order", detail=base + f"venue: not found yet "
                               f"(age {age_s:.1f}s < grace)", resolution="waiting",
                               client_order_id=lo.client_order_id)
        side: Side = "buy" if lo.side == "buy" else "sell"
        ev = OrderEvent(venue=lo.venue, symbol=lo.symbol, client_order_id=lo.client_order_id,
                        side=side, quantity=lo.quantity, filled_quantity=lo.filled_quantity,
                        status="CANCELED", venue_order_id=lo.venue_order_id,
                        intent_id=lo.intent_id, trade_id=lo.trade_id,
                        reason="reconciler: not on the venue", ts=self.clock.now_ns(),
                        role=role_of(lo.client_order_id))
        await self.bus.publish(self.bus.subjects.order(lo.venue, lo.symbol), ev,
                               f"order:{lo.client_order_id}:CANCELED:"
                               f"{to_str(lo.filled_quantity)}")
        CORRECTIONS.labels(lo.venue).inc()
        return Discrepancy(kind="stale_order", detail=base + "venue: order not found",
                           resolution="canceled: not on the venue",
                           client_order_id=lo.client_order_id)

    async def _record_unknown(self, venue: str, vo: VenueOrder) -> None:
        """One of our client order ids that the ledger never heard of (sent, then the
        executor died before recording it): its venue state as an order event."""
        side: Side = vo.side or "buy"
        ev = OrderEvent(venue=venue, symbol=vo.symbol, client_order_id=vo.client_order_id,
                        side=side, quantity=vo.quantity, filled_quantity=vo.filled,
                        status=vo.status, venue_order_id=vo.venue_order_id,
                        avg_price=vo.avg_price, reason="reconciler: our order, not recorded",
                        ts=self.clock.now_ns(), role=role_of(vo.client_order_id))
        await self.bus.publish(self.bus.subjects.order(venue, vo.symbol), ev,
                               f"order:{vo.client_order_id}:{vo.status}:{to_str(vo.filled)}")
        CORRECTIONS.labels(venue).inc()

    async def _correct(self, lo: LedgerOrder, vo: VenueOrder, kind: str) -> Discrepancy:
        """Publish the venue's state of one of our orders (and its fills) as events."""
        detail = (f"ledger {lo.status} filled={to_str(lo.filled_quantity)}; venue {vo.status} "
                  f"filled={to_str(vo.filled)}")
        if vo.status == lo.status and vo.filled == lo.filled_quantity:
            return Discrepancy(kind=kind, detail=detail, client_order_id=lo.client_order_id)
        side: Side = "buy" if lo.side == "buy" else "sell"
        now = self.clock.now_ns()
        ev = OrderEvent(venue=lo.venue, symbol=lo.symbol, client_order_id=lo.client_order_id,
                        side=side, quantity=lo.quantity, filled_quantity=vo.filled,
                        status=vo.status, venue_order_id=vo.venue_order_id,
                        avg_price=vo.avg_price, intent_id=lo.intent_id, trade_id=lo.trade_id,
                        reason="reconciler: venue state", ts=now,
                        role=role_of(lo.client_order_id))
        subj = self.bus.subjects
        await self.bus.publish(subj.order(lo.venue, lo.symbol), ev,
                               f"order:{lo.client_order_id}:{vo.status}:{to_str(vo.filled)}")
        for f in vo.fills:
            fill = FillEvent(venue=lo.venue, symbol=lo.symbol, client_order_id=lo.client_order_id,
                             venue_trade_id=f.trade_id, side=side, quantity=f.quantity,
                             price=f.price, fee=f.fee, fee_asset=f.fee_asset,
                             ts=f.ts_ms * 1_000_000 if f.ts_ms else now,
                             venue_order_id=vo.venue_order_id, intent_id=lo.intent_id,
                             trade_id=lo.trade_id)
            await self.bus.publish(subj.fill(lo.venue, lo.symbol), fill,
                                   f"fill:{lo.venue}:{f.trade_id}")
        CORRECTIONS.labels(lo.venue).inc()
        return Discrepancy(kind=kind, detail=detail, resolution=f"corrected: {vo.status}",
                           client_order_id=lo.client_order_id)

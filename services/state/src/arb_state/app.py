"""Wiring of the state service: schema check, session row, Redis, bus consumer, query API.

Start order: ledger (wait until reachable, refuse if the schema is behind) → session row
→ Redis hot state (re-synced from the ledger) → bus → durable batched consumer on EXEC.
Each batch is one ledger transaction; the bus acks after the commit; Redis is written after.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import create_engine, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from arb_common.bus import Bus, Delivery
from arb_common.errors import ConfigError
from arb_common.ledger import SessionRow, check_schema_current
from arb_common.runtime import ServiceRuntime, connect_bus
from arb_common.settings import load_settings

from . import api
from .analytics import (
    EquityPoint,
    equity_loop,
    export_equity,
    init_series,
    intent_batch_handler,
    slippage_loop,
)
from .config import StateSettings
from .hot import HotState
from .ingest import IngestEvent, IngestResult, LedgerWriter, PositionUpdate, ingest_batch
from .marks import Marks
from .partitions import run_maintenance
from .queries import load_positions
from .retention import retention_loop
from .snapshots import SnapshotStore, ack_floor
from .snapshots import register as register_snapshots

logger = logging.getLogger(__name__)

EVENTS = Counter("arb_state_events_ingested_total", "Events written to the ledger", ["kind"])
FILLS_DUP = Counter("arb_state_fills_duplicate_total", "Fill events already in the ledger")
BATCH_SECONDS = Histogram(
    "arb_state_ingest_batch_seconds", "Time to write one batch (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
DB_ERRORS = Counter("arb_state_db_errors_total", "Ledger operations that failed")
POISON = Counter("arb_state_events_rejected_total", "Events the ledger refused (sent to DLQ)")
POSITIONS = Gauge("arb_state_positions", "Signed position (own mode+session)", ["venue", "symbol"])
REALIZED = Gauge("arb_state_realized_pnl", "Realized PnL, quote asset (own mode+session)",
                 ["symbol"])

# Errors that mean "the ledger is not reachable": retry the whole batch later.
_TRANSIENT = (OperationalError, InterfaceError, OSError, TimeoutError,
              psycopg.OperationalError, psycopg.InterfaceError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _TRANSIENT)


class StateService:
    def __init__(self, rt: ServiceRuntime) -> None:
        if not isinstance(rt.settings, StateSettings):
            raise TypeError("StateService needs StateSettings")
        self.rt = rt
        self.settings: StateSettings = rt.settings
        self.engine: Engine | None = None
        self.writer: LedgerWriter | None = None
        self.hot: HotState | None = None
        self._hot_task: asyncio.Task[None] | None = None
        self.bus: Bus | None = None
        self.snapshots: SnapshotStore | None = None
        self.marks = Marks()  # latest mids from md.book (unrealized PnL, equity)
        init_series(self.settings.venue_list, self.settings.symbol_list)
        api.register(rt.app, lambda: self.engine, self.settings, marks=self.marks)
        rt.info_extra["ledger_head"] = lambda: _head()

    # ------------------------------------------------------------ lifecycle
    async def start(self, rt: ServiceRuntime) -> None:
        s = self.settings
        # Sync engine, used from worker threads (asyncio.to_thread): no greenlet bridge, and
        # a batch is one short transaction, so a thread per in-flight call is cheap.
        self.engine = create_engine(
            s.database_url_psycopg, pool_size=s.db_pool_size, pool_pre_ping=True,
            connect_args={"connect_timeout": 5},
        )  # fmt: skip
        # The batch hot path: one dedicated async connection (pipeline mode), no thread.
        self.writer = LedgerWriter(s.database_url_psycopg)
        rt.on_shutdown(self.stop)
        await self._wait_for_ledger()
        await self._open_session()
        self.hot = HotState(
            s.redis_url, mode=s.mode.value, session=s.session, prefix=s.redis_prefix,
            readiness=rt.readiness, loader=self._load_positions,
        )  # fmt: skip
        await self.hot.resync()
        self._update_gauges()
        rt.spawn(self.hot.run(rt.stopping, s.redis_check_s), "redis-watch")
        rt.spawn(self._watch_ledger(), "ledger-watch")
        rt.spawn(self._maintain_partitions(), "partitions")
        self.bus = await connect_bus(rt)
        self.bus.consume(
            stream="EXEC",
            durable="state-ledger",
            filter_subject=self.bus.subjects.any("exec.>"),
            batch_handler=self.handle_batch,
            batch=s.ingest_batch,
            max_deliver=s.ingest_max_deliver,
            # Positions are average cost: applied in stream order, across PostgreSQL outages
            # (the failing batch is retried in place) and crashes (restart at the ack floor).
            in_order=True,
        )
        # Decisions (expected prices, for slippage) from STRAT, acked after their commit.
        self.bus.consume(
            stream="STRAT", durable="state-intents",
            filter_subject=self.bus.subjects.any("strat.intent.>"),
            batch_handler=intent_batch_handler(lambda: self.engine),
            batch=s.ingest_batch, max_deliver=s.ingest_max_deliver,
        )  # fmt: skip
        await self.marks.start(self.bus)
        self.snapshots = SnapshotStore(
            self.engine, ack_floor(self.bus),
            keep=s.snapshot_keep, keep_running=s.snapshot_keep_running,
            verify_wait_s=s.snapshot_verify_wait_s,
        )  # fmt: skip
        await register_snapshots(self.bus, self.snapshots)
        rt.spawn(retention_loop(self.engine, retention_days=s.snapshot_retention_days,
                                keep=s.snapshot_keep, interval_s=s.maintenance_interval_s,
                                stopping=rt.stopping), "snapshot-retention")
        rt.spawn(slippage_loop(lambda: self.engine, rt.stopping, s.analytics_interval_s),
                 "slippage")
        rt.spawn(equity_loop(lambda: self.engine, self.marks, s.mode.value, rt.stopping,
                             s.equity_interval_s, on_points=self._write_equity), "equity")
        logger.info("state ready mode=%s session=%s", s.mode.value, s.session)

    async def stop(self) -> None:
        if self._hot_task is not None:
            await asyncio.wait({self._hot_task}, timeout=5.0)
        if self.writer is not None:
            await self.writer.close()
        if self.engine is not None:
            try:
                await asyncio.to_thread(self._close_session, self.engine)
            except Exception as exc:  # noqa: BLE001 - best effort on shutdown
                logger.warning("could not mark session stopped error=%r", exc)
        if self.hot is not None:
            await self.hot.close()
        if self.engine is not None:
            self.engine.dispose()

    async def _wait_for_ledger(self) -> None:
        """Wait until PostgreSQL answers; raise ConfigError if its schema is not at head."""
        assert self.engine is not None
        while not self.rt.stopping.is_set():
            try:
                await asyncio.to_thread(check_schema_current, self.engine)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - not reachable yet: keep waiting
                self._ledger_state(False, exc)
                await asyncio.sleep(1.0)
                continue
            self._ledger_state(True)
            return

    def _close_session(self, engine: Engine) -> None:
        with engine.begin() as conn:
            conn.execute(
                update(SessionRow).where(SessionRow.id == self.settings.session)
                .values(status="stopped", stopped_at=datetime.now(UTC))
            )  # fmt: skip

    async def _open_session(self) -> None:
        assert self.engine is not None
        await asyncio.to_thread(self._open_session_sync, self.engine)

    def _open_session_sync(self, engine: Engine) -> None:
        """Create this (session, mode) row, or resume it; a session never changes mode."""
        s = self.settings
        ins = pg_insert(SessionRow).values(
            id=s.session, mode=s.mode.value, started_at=datetime.now(UTC), status="running"
        )
        stmt = ins.on_conflict_do_update(
            index_elements=[SessionRow.id],
            set_={"status": "running", "stopped_at": None},
            where=SessionRow.mode == ins.excluded.mode,
        ).returning(SessionRow.started_at)
        with engine.begin() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise ConfigError(
                f"ARB_SESSION: session {s.session!r} already exists in another mode than "
                f"{s.mode.value}; choose a new session name"
            )
        logger.info("session open session=%s mode=%s started_at=%s", s.session, s.mode.value,
                    row.started_at.isoformat())

    async def _watch_ledger(self) -> None:
        assert self.engine is not None
        while not self.rt.stopping.is_set():
            try:
                await asyncio.to_thread(_ping, self.engine)
                self._ledger_state(True)
            except Exception as exc:  # noqa: BLE001 - reported on /readyz
                self._ledger_state(False, exc)
            try:
                await asyncio.wait_for(self.rt.stopping.wait(), timeout=self.settings.pg_check_s)
            except TimeoutError:
                pass

    def _ledger_state(self, ok: bool, exc: BaseException | None = None) -> None:
        detail = "" if ok else f"down: {type(exc).__name__}: {exc}"[:200]
        self.rt.readiness.set("postgres", ok, detail)

    async def _load_positions(self, sessions: set[tuple[str, str]]) -> list[PositionUpdate]:
        assert self.engine is not None
        return await asyncio.to_thread(load_positions, self.engine, sessions)

    # ------------------------------------------------------------ ingest
    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        """Write the batch in one transaction; raise (→ nak, redelivery) if the ledger is down."""
        assert self.engine is not None and self.writer is not None
        started = time.perf_counter()
        try:
            events = [_event(d) for d in deliveries]
            result = await self.writer.ingest(events)
        except Exception as exc:
            DB_ERRORS.inc()
            if _is_transient(exc) or self.bus is None:
                self._ledger_state(False, exc)
                logger.warning("ledger write failed, batch will be redelivered count=%d "
                               "error=%r", len(deliveries), exc)
                raise
            logger.error("ledger refused batch, isolating count=%d error=%r", len(deliveries), exc)
            result = await self._one_by_one(deliveries)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        self._ledger_state(True)
        EVENTS.labels("order").inc(result.orders)
        EVENTS.labels("fill").inc(result.fills)
        FILLS_DUP.inc(result.fills_duplicate)
        if self.hot is not None and result.positions:
            # Redis is hot state written after the commit: it must not hold back the acks (the
            # bus acks when this returns). Writes stay in commit order (each waits for the
            # previous one); HotState never raises and re-syncs from PostgreSQL on trouble.
            self._hot_task = asyncio.create_task(
                self._write_hot(self._hot_task, result.positions), name="hot-write")

    async def _write_hot(self, prev: asyncio.Task[None] | None,
                         positions: list[PositionUpdate]) -> None:
        if prev is not None:
            await asyncio.wait({prev})
        assert self.hot is not None
        await self.hot.write(positions)
        self._update_gauges()

    async def _write_equity(self, points: list[EquityPoint]) -> None:
        export_equity(points, self.settings.session)
        if self.hot is not None:
            await self.hot.write_equity(points)

    async def _one_by_one(self, deliveries: Sequence[Delivery]) -> IngestResult:
        """Commit each event alone; dead-letter the ones the ledger refuses (poison)."""
        assert self.engine is not None
        total = IngestResult()
        for d in deliveries:
            try:
                r = await asyncio.to_thread(ingest_batch, self.engine, [_event(d)])
            except Exception as exc:
                if _is_transient(exc) or self.bus is None:
                    raise
                POISON.inc()
                await self.bus._dead_letter(  # the bus's own DLQ path (metric + dlq.EXEC)
                    self.bus.subjects.stream_name("EXEC"), d.msg.subject, d.msg.data,
                    f"ledger: {exc!r}"[:480],
                )  # fmt: skip
                continue
            total.orders += r.orders
            total.fills += r.fills
            total.fills_inserted += r.fills_inserted
            total.positions.extend(r.positions)
        return total

    async def _maintain_partitions(self) -> None:
        """Keep fills/orders monthly partitions created ahead (and DEFAULT emptied)."""
        assert self.engine is not None
        s = self.settings
        while not self.rt.stopping.is_set():
            try:
                await asyncio.to_thread(run_maintenance, self.engine, s.partition_months_ahead)
            except Exception as exc:  # noqa: BLE001 - retried next interval; ingest unaffected
                logger.warning("partition maintenance failed, will retry error=%r", exc)
            try:
                await asyncio.wait_for(self.rt.stopping.wait(), timeout=s.maintenance_interval_s)
            except TimeoutError:
                pass

    def _update_gauges(self) -> None:
        if self.hot is None:
            return
        own = (self.settings.mode.value, self.settings.session)
        realized: dict[str, Decimal] = {}
        for (mode, session, venue, symbol), p in self.hot.memory.items():
            if (mode, session) != own:
                continue
            POSITIONS.labels(venue, symbol).set(float(p.state.quantity))
            realized[symbol] = realized.get(symbol, Decimal(0)) + p.state.realized_pnl
        for symbol, value in realized.items():
            REALIZED.labels(symbol).set(float(value))


def _event(d: Delivery) -> IngestEvent:
    """(envelope, payload, EXEC stream sequence): the sequence is stored as fills.stream_seq."""
    return d.env, d.payload, d.msg.metadata.sequence.stream


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _head() -> Any:
    from arb_common.ledger import HEAD

    return HEAD


def precheck_schema(url: str) -> None:
    """Exit 2 with one line if the ledger schema is behind; carry on if PG is unreachable."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        check_schema_current(engine)
    except ConfigError as exc:
        sys.stderr.write(f"config error: ARB_DATABASE_URL: {exc}\n")
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001 - start() waits for the ledger and reports it
        logger.warning("ledger not reachable at start, will wait error=%r", exc)
    finally:
        engine.dispose()


def main() -> None:
    settings = load_settings(StateSettings)
    precheck_schema(settings.database_url_psycopg)
    rt = ServiceRuntime("state", settings)
    service = StateService(rt)
    rt.run(service.start)

"""strategy wiring: books and fills from the bus into the engine, intents back out.

The decisions are all in :mod:`engine` (pure) and what must survive a crash in :mod:`memory`
(pure); this module moves messages, keeps metrics and answers operator control.

Start (a restart is the same path, CONTRACTS.md "Memory"): the strategy subscribes to books
and control at once, but decides nothing until it is *live* (fail closed, ``/readyz`` says
why): latest valid snapshot from the state service (retried until it answers) → the last
intent per symbol newer than it → replay of EXEC from ``exec_seq + 1`` (this mode and
session only) → live on the same ordered consumer. Snapshots are saved in the background
(:mod:`snapshots`); guard state and cooldowns are mirrored to Redis (:mod:`hotstate`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import msgspec

from arb_common.books import BookError, LazyBook, decode_book
from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.follow import Follower
from arb_common.hot import HotMirror
from arb_common.keyspace import Keyspace
from arb_common.messages import Book, Envelope, TradingControl, VenueReady
from arb_common.money import D
from arb_common.runtime import Readiness, ServiceRuntime, connect_bus
from arb_common.settings import load_settings
from arb_common.snapshots import Snapshot, SnapshotReason
from arb_common.venues import discover

from .config import StrategySettings
from .control import Control
from .engine import Engine, EngineConfig
from .hedge_blocks import HedgeBlocks
from .hotstate import DAILY, StrategyHot
from .memory import COMPONENT, StrategyMemory
from .metrics import (
    BAD_MESSAGES,
    DAILY_LOSS,
    DAILY_PNL,
    EXEC_SEQ,
    EXPOSURE,
    REALIZED_PNL,
    REDIS_ERRORS,
    REPLAYED,
    RESTORE_SECONDS,
    RESTORED,
    SPREAD,
    TRADES,
    TRADES_WON,
    TRADING_ENABLED,
    export_limits,
)
from .pnl import PnlTracker, TradeResult
from .publish import Decider
from .recovery import Recovery
from .risk_guard import RiskGuard
from .snapshots import SnapshotClient, SnapshotError, SnapshotSaver

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


def _create_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            logger.critical("strategy task crashed task=%s error=%r", t.get_name(),
                            t.exception(), exc_info=t.exception())

    task.add_done_callback(done)
    return task


class StrategyService:
    def __init__(self, settings: StrategySettings, bus: Bus, fees: dict[str, Decimal],
                 clock: Clock = SYSTEM_CLOCK, *, readiness: Readiness | None = None,
                 redis: bool = True, spawn: Spawn | None = None) -> None:
        self.settings = settings
        # Background tasks; the runtime's spawn stops the process if one crashes.
        self._spawner: Spawn = spawn or _create_task
        self.bus = bus
        self.clock = clock
        self.guard = RiskGuard(
            daily_loss_limit=settings.daily_loss_limit,
            clock=clock,
            exposure_caps=settings.max_exposure,
            default_exposure_cap=settings.max_exposure_default,
        )
        export_limits(self.guard, settings.symbol_list)
        cfg = EngineConfig(
            order_qty={s: settings.order_qty[s] for s in settings.symbol_list},
            session=settings.session,
            min_spread_bps=settings.min_spread_bps,
            close_spread_bps=settings.close_spread_bps,
            max_hold_s=settings.max_hold_s,
            cooldown_s=settings.cooldown_s,
            book_stale_s=settings.book_stale_s,
        )
        self.engine = Engine(cfg, fees, self.guard, clock,
                             trading_enabled=settings.trading_enabled)
        self.pnl = PnlTracker()
        self.memory = StrategyMemory(mode=settings.mode.value, session=settings.session,
                                     engine=self.engine, guard=self.guard, pnl=self.pnl)
        self.saver = SnapshotSaver(self.build_snapshot,
                                   SnapshotClient(bus, settings.restore_request_timeout_s),
                                   min_spacing_s=settings.snapshot_min_spacing_s)
        self.hot: HotMirror | None = None
        if redis:
            ks = Keyspace(settings.mode.value, settings.session, f"arb{settings.bus_prefix}")
            self.hot = HotMirror(
                settings.redis_url, keyspace=ks, owner=COMPONENT,
                render=StrategyHot(ks, self.engine, self.guard).render, errors=REDIS_ERRORS,
                degrade=readiness.degrade if readiness is not None else None,
                flush_s=settings.hot_flush_s, check_s=settings.hot_check_s,
                now_ms=clock.now_ms,
            )  # fmt: skip
        self.live = False  # restored and replayed: deciding
        self.live_event = asyncio.Event()
        self.restore_detail = "not started"
        self.restore_seconds: float | None = None
        self.restored_from: str | None = None  # the snapshot restored (None: empty state)
        self.restore_timings: dict[str, float] = {}  # seconds per phase of the last restore
        self.follower: Follower | None = None
        self._replayed = 0  # EXEC events of ours applied while restoring
        self.decider = Decider(bus, self.engine, clock,
                               risk_event_interval_s=settings.risk_event_interval_s,
                               changed=self.hot_changed)
        self.control = Control(self)
        self.hedge_blocks = HedgeBlocks(self)
        self.stopping = False
        self._halt = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self._restore_trading()
        subj = self.bus.subjects
        # Levels decoded on use: most books of a burst end at the top-of-book check.
        await self.bus.subscribe(subj.any("md.book.*.*"), self.on_book, where="md.book",
                                 decoder=decode_book)
        await self.control.subscribe()
        self.hedge_blocks.start()
        await self.bus.subscribe(subj.any("sys.ready.*"), self.on_ready, where="sys.ready")
        for venue in self.engine.fees:
            last = await self.bus.last_message("RECON", subj.ready(venue))
            if last is not None and isinstance(last[1], VenueReady):
                self.engine.set_venue_ready(venue, last[1].ready and not last[1].halted)
            elif self.engine.venue_ready is None or venue not in self.engine.venue_ready:
                self.engine.set_venue_ready(venue, False)
        self._spawn(self._recover(), "recover")
        if self.hot is not None:
            self._spawn(self.hot.run(self._halt), "hot-state")
        self._spawn(self._watch_bus(), "bus-watch")
        logger.info("strategy started symbols=%s venues=%s trading_enabled=%s",
                    ",".join(self.engine.symbols), ",".join(self.engine.fees),
                    self.engine.trading_enabled)

    async def stop(self) -> None:
        """Stop deciding; let intents already decided land (PubAck, or abort); save the final
        snapshot and hot state. The bus's own close (a later shutdown hook) then stops the
        EXEC consumer, flushes and closes NATS."""
        self.stopping = True
        await self.decider.wait_published(timeout=10.0)
        if self.live:
            try:
                await asyncio.wait_for(self.saver.save("shutdown"),
                                       self.settings.restore_request_timeout_s + 1)
            except (SnapshotError, TimeoutError) as exc:
                logger.error("final snapshot not saved error=%r", exc)
        if self.hot is not None and self.hot.in_sync:
            await self.hot.flush()
        await self._cancel_tasks()
        if self.hot is not None:
            await self.hot.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.append(self._spawner(coro, f"strategy:{name}"))

    async def _cancel_tasks(self) -> None:
        self._halt.set()
        self.saver.cancel()
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_bus(self) -> None:
        """The bus closed under us (shutdown without stop(), tests): end our tasks too."""
        await self.bus.closed.wait()
        await self._cancel_tasks()

    async def _restore_trading(self) -> None:
        last = await self.bus.last_message("CTL", self.bus.subjects.ctl_event("trading"))
        if last is not None and isinstance(last[1], TradingControl):
            self.engine.trading_enabled = last[1].enabled
            logger.info("trading state restored enabled=%s actor=%s", last[1].enabled,
                        last[1].actor)
        TRADING_ENABLED.set(1 if self.engine.trading_enabled else 0)

    # ------------------------------------------------------------ recovery
    async def _recover(self) -> None:
        started = time.perf_counter()
        if await Recovery(self).run():
            self._go_live(time.perf_counter() - started)

    def _go_live(self, seconds: float) -> None:
        self.restore_seconds = seconds
        RESTORE_SECONDS.observe(seconds)
        REPLAYED.inc(self._replayed)
        EXEC_SEQ.set(self.memory.exec_seq)
        RESTORED.set(1)
        self.live = True
        self.live_event.set()
        self.restore_detail = ""
        self._refresh_gauges()
        logger.info("strategy live exec_seq=%d restore_s=%.3f replayed=%d", self.memory.exec_seq,
                    seconds, self._replayed)
        self.saver.trigger("start")
        if self.hot is not None:
            self.hot.enable()
        self._spawn(self._periodic_snapshots(), "snapshots")

    async def _periodic_snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_s)
            self.saver.trigger("periodic")

    def build_snapshot(self, reason: SnapshotReason) -> Snapshot:
        return self.memory.snapshot(reason, self.clock.now_ns())

    def _refresh_gauges(self) -> None:
        for symbol in set(self.guard.positions) | set(self.guard.realized):
            EXPOSURE.labels(symbol).set(float(self.guard.exposure(symbol)))
        for symbol, realized in self.guard.realized.items():
            REALIZED_PNL.labels(symbol).set(float(realized))
        DAILY_PNL.set(float(self.guard.daily_pnl))
        DAILY_LOSS.set(float(self.guard.daily_loss()))

    # ------------------------------------------------------------ books -> intents
    async def on_book(self, env: Envelope, payload: Any) -> None:
        if not isinstance(payload, (Book, LazyBook)):
            BAD_MESSAGES.labels("not_a_book").inc()
            logger.error("unexpected message on book subject type=%s id=%s", env.type, env.id)
            return
        if self.stopping:
            return
        try:
            await self._on_book(payload)
        except BookError as exc:
            # A side that does not decode (read lazily): drop the bad book(s) of the symbol;
            # the venue's next book replaces them.
            BAD_MESSAGES.labels("bad_book").inc()
            dropped = self.engine.drop_bad_books(payload.symbol)
            logger.error("bad book dropped id=%s venues=%s error=%s", env.id,
                         ",".join(dropped), exc)

    async def _on_book(self, payload: Any) -> None:  # Book | LazyBook
        if not self.live:
            # Fail closed until restored: keep the book, show the spread, decide nothing.
            if self.engine.remember(payload) is not None:
                spread = self.engine.spread_bps(payload.symbol)
                if spread is not None:
                    SPREAD.labels(payload.symbol).set(float(spread))
            return
        await self.decider.on_book(payload)

    def hot_changed(self, symbol: str) -> None:
        if self.hot is not None:
            self.hot.mark(symbol)

    async def set_trading(self, enabled: bool, *, actor: str = "operator",
                          reason: str = "") -> bool:
        return await self.control.set_trading(enabled, actor=actor, reason=reason)

    async def on_ready(self, env: Envelope, payload: Any) -> None:
        if isinstance(payload, VenueReady):
            self.engine.set_venue_ready(payload.venue, payload.ready and not payload.halted)
            logger.info("venue gate venue=%s ready=%s halted=%s reason=%s", payload.venue,
                        payload.ready, payload.halted, payload.reason)

    # ------------------------------------------------------------ EXEC -> memory
    async def on_exec(self, seq: int, env: Envelope, payload: Any) -> None:
        """One EXEC event by stream sequence (replay and live alike)."""
        try:
            applied = self.memory.apply(seq, env, payload)
        except (TypeError, ValueError) as exc:
            BAD_MESSAGES.labels("exec").inc()
            logger.error("EXEC event not applied seq=%d id=%s error=%s", seq, env.id, exc)
            return
        if not self.live:
            # Replaying: gauges, hot state and snapshots are all refreshed once at go-live.
            self._replayed += applied is not None
            return
        EXEC_SEQ.set(seq)
        if applied is None:
            return
        if self.hot is not None:
            self.hot.mark(applied.symbol)
        if applied.fill:
            EXPOSURE.labels(applied.symbol).set(float(self.guard.exposure(applied.symbol)))
        if applied.trade is not None:
            self._trade_closed(applied.trade)

    def _trade_closed(self, result: TradeResult) -> None:
        REALIZED_PNL.labels(result.symbol).set(float(self.guard.realized[result.symbol]))
        DAILY_PNL.set(float(self.guard.daily_pnl))
        DAILY_LOSS.set(float(self.guard.daily_loss()))
        if self.hot is not None:
            self.hot.mark(DAILY)
        TRADES.labels(result.symbol).inc()
        if result.pnl > 0:
            TRADES_WON.labels(result.symbol).inc()
        logger.info("trade complete trade_id=%s symbol=%s pnl=%s qty=%s", result.trade_id,
                    result.symbol, result.pnl, result.quantity)
        self.saver.trigger("trade_closed")

    # ------------------------------------------------------------ health
    def ready(self) -> tuple[bool, str]:
        venues: set[str] = set()
        for symbol in self.engine.symbols:
            venues.update(self.engine.fresh_books(symbol))
        if len(venues) >= 2:
            return True, ""
        return False, f"fresh books from {len(venues)} venue(s), need 2"

    def restore_ready(self) -> tuple[bool, str]:
        return self.live, self.restore_detail

    def info(self) -> dict[str, Any]:
        last = self.saver.last
        return {
            "trading_enabled": self.engine.trading_enabled,
            "live": self.live,
            "restore": self.restore_detail or {"seconds": self.restore_seconds,
                                               **self.restore_timings},
            "exec_seq": self.memory.exec_seq,
            "restored_from": self.restored_from,
            "last_snapshot": {"snapshot_id": last.snapshot_id, "reason": last.reason,
                              "exec_seq": last.exec_seq} if last else None,
            "redis_in_sync": self.hot.in_sync if self.hot is not None else None,
            "open_trades": {s: t.trade_id for s, t in self.engine.open_trades().items()},
            "risk_guard": self.guard.get_state(),
            "fees": {v: str(f) for v, f in self.engine.fees.items()},
        }

    def state_doc(self) -> dict[str, Any]:
        """The current Snapshot document (not saved), for ``ctl.strategy.state``."""
        doc: dict[str, Any] = msgspec.to_builtins(self.build_snapshot("manual"), order="sorted")
        return doc


async def start(rt: ServiceRuntime) -> None:
    settings = rt.settings
    assert isinstance(settings, StrategySettings)
    bus: Bus = await connect_bus(rt)
    venues = await discover(settings.venue_list, settings.venue_sim_url)
    fees = {v: D(cfg.taker_fee) for v, cfg in venues.items()}
    svc = StrategyService(settings, bus, fees, readiness=rt.readiness, spawn=rt.spawn)
    rt.readiness.probe("books", svc.ready)
    rt.readiness.probe("restore", svc.restore_ready)
    await svc.start()
    rt.on_shutdown(svc.stop)  # runs before the bus closes (hooks run in reverse order)
    rt.info_extra["strategy"] = svc.info


def main() -> None:
    settings = load_settings(StrategySettings)
    ServiceRuntime("strategy", settings).run(start)


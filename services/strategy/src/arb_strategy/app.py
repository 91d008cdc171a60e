"""strategy wiring: books and fills from the bus into the engine, intents back out.

The decisions are all in :mod:`engine` (pure); this module only moves messages, keeps metrics
and answers operator control.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import orjson
from nats.aio.msg import Msg

from arb_common.bus import Bus, SeenIds
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.messages import (
    Book,
    Envelope,
    FillEvent,
    Intent,
    OrderEvent,
    RiskEvent,
    TradingControl,
    VenueReady,
)
from arb_common.money import D
from arb_common.runtime import ServiceRuntime, connect_bus
from arb_common.settings import load_settings
from arb_common.venues import discover

from .config import StrategySettings
from .engine import Engine, EngineConfig, RiskBlock
from .metrics import (
    BAD_MESSAGES,
    DAILY_LOSS,
    DAILY_PNL,
    DECISION,
    EXPOSURE,
    INTENTS,
    PUBLISH_ERRORS,
    REALIZED_PNL,
    RISK_BLOCKS,
    SPREAD,
    TRADES,
    TRADING_ENABLED,
)
from .pnl import PnlTracker
from .risk_guard import RiskGuard

logger = logging.getLogger(__name__)

EXEC_DURABLE = "strategy-exec"


class StrategyService:
    def __init__(self, settings: StrategySettings, bus: Bus, fees: dict[str, Decimal],
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.bus = bus
        self.clock = clock
        self.guard = RiskGuard(
            daily_loss_limit=settings.daily_loss_limit,
            clock=clock,
            exposure_caps=settings.max_exposure,
            default_exposure_cap=settings.max_exposure_default,
        )
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
        self.seen_fills = SeenIds()
        self._risk_sent: dict[tuple[str, str], int] = {}
        self.stopping = False
        # symbol -> its intent publish waiting for the PubAck (at most one per symbol)
        self._publishing: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self._restore_trading()
        subj = self.bus.subjects
        await self.bus.subscribe(subj.any("md.book.*.*"), self.on_book, where="md.book")
        await self.bus.nc.subscribe(subj.ctl("strategy", "trading"), cb=self.on_trading_request)
        await self.bus.subscribe(subj.any("sys.ready.*"), self.on_ready, where="sys.ready")
        for venue in self.engine.fees:
            last = await self.bus.last_message("RECON", subj.ready(venue))
            if last is not None and isinstance(last[1], VenueReady):
                self.engine.set_venue_ready(venue, last[1].ready)
            elif self.engine.venue_ready is None or venue not in self.engine.venue_ready:
                self.engine.set_venue_ready(venue, False)
        self.bus.consume(stream="EXEC", durable=EXEC_DURABLE,
                         filter_subject=subj.any("exec.>"), handler=self.on_exec)
        logger.info("strategy started symbols=%s venues=%s trading_enabled=%s",
                    ",".join(self.engine.symbols), ",".join(self.engine.fees),
                    self.engine.trading_enabled)

    async def stop(self) -> None:
        """Stop deciding; let intents already decided land (PubAck, or abort). The bus's own
        close (a later shutdown hook) cancels the consumer, flushes and closes NATS."""
        self.stopping = True
        if self._publishing:
            await asyncio.wait(list(self._publishing.values()), timeout=10.0)

    async def _restore_trading(self) -> None:
        last = await self.bus.last_message("CTL", self.bus.subjects.ctl_event("trading"))
        if last is not None and isinstance(last[1], TradingControl):
            self.engine.trading_enabled = last[1].enabled
            logger.info("trading state restored enabled=%s actor=%s", last[1].enabled,
                        last[1].actor)
        TRADING_ENABLED.set(1 if self.engine.trading_enabled else 0)

    # ------------------------------------------------------------ books -> intents
    async def on_book(self, env: Envelope, payload: Any) -> None:
        if not isinstance(payload, Book):
            BAD_MESSAGES.labels("not_a_book").inc()
            logger.error("unexpected message on book subject type=%s id=%s", env.type, env.id)
            return
        if self.stopping:
            return
        if payload.symbol in self._publishing:
            # This symbol's last intent is not acknowledged yet (and may still be aborted):
            # keep the book, decide on the next one. Other symbols are not held up.
            self.engine.remember(payload)
            return
        decision = self.engine.on_book(payload)
        if decision.spread_bps is not None:
            SPREAD.labels(payload.symbol).set(float(decision.spread_bps))
        for block in decision.blocks:
            await self._risk_block(block)
        if decision.intents:
            # The decision is stamped (envelope ts) and sent now; waiting for its PubAck here
            # would hold every other symbol's books behind one JetStream round trip.
            task = asyncio.create_task(self._publish_intents(decision.intents),
                                       name=f"intent:{payload.symbol}")
            self._publishing[payload.symbol] = task
            symbol = payload.symbol
            task.add_done_callback(lambda _t: self._publishing.pop(symbol, None))
            # Yield twice so the task stamps and queues the publish, then nats-py's flusher
            # writes it, before the next queued book is handled (a subscription handles its
            # queued messages without yielding).
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def _publish_intents(self, intents: list[Intent]) -> None:
        for intent in intents:
            await self._publish_intent(intent)

    async def _publish_intent(self, intent: Intent) -> None:
        try:
            await self.bus.publish(self.bus.subjects.intent(intent.symbol), intent,
                                   f"intent:{intent.intent_id}")
        except Exception as exc:  # noqa: BLE001 - undo and carry on; the next book retries
            PUBLISH_ERRORS.labels(intent.symbol).inc()
            logger.error("intent publish failed intent_id=%s error=%r", intent.intent_id, exc)
            self.engine.abort(intent)
            return
        INTENTS.labels(intent.symbol, intent.action).inc()
        if intent.origin_ts:
            DECISION.observe(max(0.0, (time.time_ns() - intent.origin_ts) / 1e9))
        logger.info("intent published intent_id=%s buy=%s sell=%s qty=%s net_bps=%s reason=%s",
                    intent.intent_id, intent.buy_venue, intent.sell_venue, intent.quantity,
                    intent.net_spread_bps, intent.reason)

    async def _risk_block(self, block: RiskBlock) -> None:
        RISK_BLOCKS.labels(block.symbol, block.kind).inc()
        now = self.clock.now_ns()
        key = (block.symbol, block.kind)
        last = self._risk_sent.get(key)
        if last is not None and now - last < self.settings.risk_event_interval_s * 1e9:
            return
        self._risk_sent[key] = now
        logger.warning("open blocked symbol=%s kind=%s detail=%s", block.symbol, block.kind,
                       block.detail)
        event = RiskEvent(symbol=block.symbol, kind=block.kind, blocked=True, detail=block.detail)
        try:
            await self.bus.publish(self.bus.subjects.risk(block.symbol), event,
                                   f"risk:{block.symbol}:{block.kind}:{now}")
        except Exception as exc:  # noqa: BLE001 - the metric and log line already tell it
            logger.error("risk event publish failed symbol=%s error=%r", block.symbol, exc)

    async def on_ready(self, env: Envelope, payload: Any) -> None:
        if isinstance(payload, VenueReady):
            self.engine.set_venue_ready(payload.venue, payload.ready)
            logger.info("venue gate venue=%s ready=%s", payload.venue, payload.ready)

    # ------------------------------------------------------------ fills -> pnl
    async def on_exec(self, env: Envelope, payload: Any) -> None:
        if isinstance(payload, OrderEvent):
            self.engine.on_order(payload)
            return
        await self.on_fill(env, payload)

    async def on_fill(self, env: Envelope, payload: Any) -> None:
        if not isinstance(payload, FillEvent):
            BAD_MESSAGES.labels("not_a_fill").inc()
            return
        if not self.seen_fills.add(env.id):
            return
        fill = payload
        self.guard.record_fill(fill.symbol, fill.venue, fill.side, fill.quantity, fill.price)
        EXPOSURE.labels(fill.symbol).set(float(self.guard.exposure(fill.symbol)))
        result = self.pnl.on_fill(fill)
        if result is None:
            return
        self.guard.record_trade_pnl(result.symbol, result.pnl)
        TRADES.labels(result.symbol).inc()
        REALIZED_PNL.labels(result.symbol).set(float(self.guard.realized[result.symbol]))
        DAILY_PNL.set(float(self.guard.daily_pnl))
        DAILY_LOSS.set(float(self.guard.daily_loss()))
        logger.info("trade complete trade_id=%s symbol=%s pnl=%s qty=%s", result.trade_id,
                    result.symbol, result.pnl, result.quantity)

    # ------------------------------------------------------------ operator control
    async def on_trading_request(self, msg: Msg) -> None:
        try:
            req = orjson.loads(msg.data) if msg.data else {}
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            enabled = req.get("enabled")
            if enabled is not None and not isinstance(enabled, bool):
                raise ValueError("'enabled' must be true or false")
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            BAD_MESSAGES.labels("control").inc()
            await msg.respond(orjson.dumps({"ok": False, "error": str(exc)}))
            return
        reply: dict[str, Any] = {"ok": True}
        if enabled is not None:
            reply["persisted"] = await self.set_trading(
                enabled, actor=str(req.get("actor", "operator")), reason=str(req.get("reason", "")))
        reply["enabled"] = self.engine.trading_enabled
        await msg.respond(orjson.dumps(reply))

    async def set_trading(self, enabled: bool, *, actor: str = "operator",
                          reason: str = "") -> bool:
        """Apply at once (exits keep running), then record it durably on ``ctl.event.trading``."""
        self.engine.trading_enabled = enabled
        TRADING_ENABLED.set(1 if enabled else 0)
        logger.warning("trading %s actor=%s reason=%s", "enabled" if enabled else "disabled",
                       actor, reason)
        ts = self.clock.now_ns()
        try:
            await self.bus.publish(self.bus.subjects.ctl_event("trading"),
                                   TradingControl(enabled=enabled, actor=actor, reason=reason),
                                   f"trading:{ts}", timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - the switch works; persistence is reported
            logger.error("trading control not persisted error=%r", exc)
            return False
        return True

    # ------------------------------------------------------------ health
    def ready(self) -> tuple[bool, str]:
        venues: set[str] = set()
        for symbol in self.engine.symbols:
            venues.update(self.engine.fresh_books(symbol))
        if len(venues) >= 2:
            return True, ""
        return False, f"fresh books from {len(venues)} venue(s), need 2"

    def info(self) -> dict[str, Any]:
        return {
            "trading_enabled": self.engine.trading_enabled,
            "open_trades": {s: t.trade_id for s, t in self.engine.open_trades().items()},
            "risk_guard": self.guard.get_state(),
            "fees": {v: str(f) for v, f in self.engine.fees.items()},
        }


async def start(rt: ServiceRuntime) -> None:
    settings = rt.settings
    assert isinstance(settings, StrategySettings)
    bus: Bus = await connect_bus(rt)
    venues = await discover(settings.venue_list, settings.venue_sim_url)
    fees = {v: D(cfg.taker_fee) for v, cfg in venues.items()}
    svc = StrategyService(settings, bus, fees)
    await svc.start()
    rt.on_shutdown(svc.stop)  # runs before the bus closes (hooks run in reverse order)
    rt.readiness.probe("books", svc.ready)
    rt.info_extra["strategy"] = svc.info


def main() -> None:
    settings = load_settings(StrategySettings)
    ServiceRuntime("strategy", settings).run(start)

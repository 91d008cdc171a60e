"""Decisions out to the bus: intents (PubAck-checked, off the book loop) and risk events.

Each intent's envelope carries the time it was decided (``Decision.ts``), the time the engine
derived the trade's open time and cooldown from, so a restart recomputes them exactly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from arb_common.bus import Bus
from arb_common.clock import Clock
from arb_common.messages import Book, Intent, RiskEvent

from .engine import Engine, RiskBlock
from .metrics import DECISION, INTENTS, PUBLISH_ERRORS, RISK_BLOCKS, SPREAD

logger = logging.getLogger(__name__)


class Decider:
    def __init__(self, bus: Bus, engine: Engine, clock: Clock, *, risk_event_interval_s: float,
                 changed: Callable[[str], None]) -> None:
        self.bus = bus
        self.engine = engine
        self.clock = clock
        self.risk_event_interval_s = risk_event_interval_s
        self.changed = changed  # the symbol's trade state changed (hot state)
        self._risk_sent: dict[tuple[str, str], int] = {}
        # symbol -> its intent publish waiting for the PubAck (at most one per symbol)
        self.publishing: dict[str, asyncio.Task[None]] = {}

    async def on_book(self, book: Book) -> None:
        if book.symbol in self.publishing:
            # This symbol's last intent is not acknowledged yet (and may still be aborted):
            # keep the book, decide on the next one. Other symbols are not held up.
            self.engine.remember(book)
            return
        decision = self.engine.on_book(book)
        if decision.spread_bps is not None:
            SPREAD.labels(book.symbol).set(float(decision.spread_bps))
        for block in decision.blocks:
            await self._risk_block(block)
        if decision.intents:
            self.changed(book.symbol)
            # The decision is stamped (envelope ts) and sent now; waiting for its PubAck here
            # would hold every other symbol's books behind one JetStream round trip.
            task = asyncio.create_task(self._publish_intents(decision.intents, decision.ts),
                                       name=f"intent:{book.symbol}")
            self.publishing[book.symbol] = task
            symbol = book.symbol
            task.add_done_callback(lambda _t: self.publishing.pop(symbol, None))
            # Yield twice so the task stamps and queues the publish, then nats-py's flusher
            # writes it, before the next queued book is handled (a subscription handles its
            # queued messages without yielding).
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def wait_published(self, timeout: float) -> None:
        if self.publishing:
            await asyncio.wait(list(self.publishing.values()), timeout=timeout)

    async def _publish_intents(self, intents: list[Intent], ts: int) -> None:
        for intent in intents:
            await self._publish_intent(intent, ts)

    async def _publish_intent(self, intent: Intent, ts: int) -> None:
        try:
            await self.bus.publish(self.bus.subjects.intent(intent.symbol), intent,
                                   f"intent:{intent.intent_id}", ts=ts or None)
        except Exception as exc:  # noqa: BLE001 - undo and carry on; the next book retries
            PUBLISH_ERRORS.labels(intent.symbol).inc()
            logger.error("intent publish failed intent_id=%s error=%r", intent.intent_id, exc)
            self.engine.abort(intent)
            self.changed(intent.symbol)
            return
        self.engine.published(intent)
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
        if last is not None and now - last < self.risk_event_interval_s * 1e9:
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

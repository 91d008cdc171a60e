"""Two-leg execution of an :class:`Intent` (the STRAT consumer's handler).

For each intent, in this order:

1. already fully handled by this process -> ack (nothing to do);
2. older than ``intent_max_age_s`` -> stale: ack with REJECTED "stale intent" for each leg
   (unless a previous attempt left an order on the venue: then the venue's truth is published);
3. either venue's gate closed -> raise :class:`GateClosed` (nak with backoff: retried until the
   gate opens or the intent goes stale);
4. size both legs to the venues' lot sizes, check min qty / notional (else REJECTED, ack);
5. both legs concurrently as MARKET orders (see :mod:`arb_executor.legs`);
6. legs' fills differ -> ``arb_executor_unhedged_exposure`` and a ``RiskEvent``.

Every event is published with PubAck before the handler returns (the bus acks after that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import Gauge, Histogram

from arb_common.bus import Bus, SeenIds
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.errors import TemporaryError
from arb_common.messages import Envelope, Intent, RiskEvent

from .gate import Gate
from .legs import EventSink, LegPlan, LegRunner, TradingVenue, client_order_id, plan_legs
from .order_machine import OrderMachine
from .venue_client import OrderRejected

logger = logging.getLogger(__name__)

INTENT_TO_ACK = Histogram(
    "arb_executor_intent_to_ack_seconds", "Intent publish -> all its events durable",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UNHEDGED = Gauge("arb_executor_unhedged_exposure",
                 "Base qty bought minus sold by the last intent's two legs", ["symbol"])
INTENTS = Gauge("arb_executor_intents_in_flight", "Intents being executed")


class IntentExecutor:
    def __init__(
        self,
        bus: Bus,
        venues: Mapping[str, TradingVenue],
        gate: Gate,
        *,
        max_age_s: float = 10.0,
        resolve_s: float = 12.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.bus = bus
        self.venues = venues
        self.gate = gate
        self.max_age_ns = int(max_age_s * 1e9)
        self.clock = clock
        self.sink = EventSink(bus, clock)
        self.attempted = SeenIds(100_000)
        self.done = SeenIds(100_000)
        self.runner = LegRunner(self.sink, self.attempted, resolve_s=resolve_s)

    async def handle(self, env: Envelope, intent: Any) -> None:
        if not isinstance(intent, Intent):
            logger.warning("ignoring non-intent message type=%s id=%s", env.type, env.id)
            return
        if intent.intent_id in self.done:
            return
        INTENTS.inc()
        try:
            await self._execute(env, intent)
        finally:
            INTENTS.dec()
        self.done.add(intent.intent_id)
        INTENT_TO_ACK.observe(max(0.0, (self.clock.now_ns() - env.ts) / 1e9))

    async def _execute(self, env: Envelope, intent: Intent) -> None:
        age_ns = self.clock.now_ns() - env.ts
        unknown = [v for v in (intent.buy_venue, intent.sell_venue) if v not in self.venues]
        if unknown:
            await self._reject_all(intent, f"unknown venue {','.join(unknown)}")
            return
        if age_ns > self.max_age_ns:
            logger.warning("stale intent intent_id=%s age_s=%.3f", intent.intent_id, age_ns / 1e9)
            await self._stale(intent)
            return
        self.gate.check(intent.buy_venue, intent.sell_venue)  # GateClosed -> nak with delay
        try:
            rules_b = self.venues[intent.buy_venue].rules(intent.symbol)
            rules_s = self.venues[intent.sell_venue].rules(intent.symbol)
        except OrderRejected as exc:
            await self._reject_all(intent, exc.reason)
            return
        plans, reason = plan_legs(intent, rules_b, rules_s)
        if reason:
            logger.warning("intent not tradable intent_id=%s reason=%s", intent.intent_id, reason)
            for p in plans:
                await self.runner.reject(p, intent, reason)
            return
        results = await asyncio.gather(
            *(self.runner.run(p, intent, self.venues[p.venue]) for p in plans),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # Redelivery is safe: the NEW duplicate makes each leg query its coid first.
            raise errors[0]
        await self._check_hedge(env, intent, [r for r in results if isinstance(r, OrderMachine)])

    def _plans_unsized(self, intent: Intent) -> list[LegPlan]:
        return [
            LegPlan("buy", intent.buy_venue, intent.symbol, intent.quantity,
                    client_order_id(intent.intent_id, "buy"), intent.buy_price),
            LegPlan("sell", intent.sell_venue, intent.symbol, intent.quantity,
                    client_order_id(intent.intent_id, "sell"), intent.sell_price),
        ]

    async def _reject_all(self, intent: Intent, reason: str) -> None:
        for p in self._plans_unsized(intent):
            await self.runner.reject(p, intent, reason)

    async def _stale(self, intent: Intent) -> None:
        """Drop a stale intent, unless an earlier attempt already put an order on a venue."""
        for p in self._plans_unsized(intent):
            venue = self.venues[p.venue]
            found = None
            if self.gate.is_open(p.venue):
                try:
                    found = await venue.query(p.symbol, p.coid)
                except (TemporaryError, OrderRejected) as exc:
                    if p.coid in self.attempted:
                        logger.error("stale intent with an earlier attempt that cannot be "
                                     "checked venue=%s client_order_id=%s error=%r",
                                     p.venue, p.coid, exc)
                        continue  # stays as recorded (UNKNOWN): the reconciler resolves it
            if found is not None:
                await self.runner.apply(self.runner.machine(
                    LegPlan(p.leg, p.venue, p.symbol, found.quantity, p.coid, p.expected_price),
                    intent), found)
            else:
                await self.runner.reject(p, intent, "stale intent")

    async def _check_hedge(self, env: Envelope, intent: Intent, legs: list[OrderMachine]) -> None:
        bought = sum((m.state.filled_quantity for m in legs if m.state.side == "buy"), Decimal(0))
        sold = sum((m.state.filled_quantity for m in legs if m.state.side == "sell"), Decimal(0))
        diff = bought - sold
        UNHEDGED.labels(intent.symbol).set(float(diff))
        if diff == 0:
            return
        states = ", ".join(f"{m.state.side}@{m.state.venue}={m.status}/{m.state.filled_quantity}"
                           for m in legs)
        logger.error("unhedged exposure intent_id=%s symbol=%s diff=%s legs=[%s]",
                     intent.intent_id, intent.symbol, diff, states)
        kind = "unhedged_exposure"
        event = RiskEvent(symbol=intent.symbol, kind=kind, blocked=False,
                          detail=f"intent {intent.intent_id}: bought-sold={diff} ({states})")
        await self.bus.publish(self.bus.subjects.risk(intent.symbol), event,
                               f"risk:{intent.symbol}:{kind}:{env.ts}")

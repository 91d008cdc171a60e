"""Two-leg execution of an :class:`Intent` (the STRAT consumer's handler).

For each intent, in this order:

1. already fully handled by this process -> ack (nothing to do);
2. older than ``intent_max_age_s`` -> stale: ack with REJECTED "stale intent" for each leg
   (unless a previous attempt left an order on the venue: then the venue's truth is published);
3. either venue's gate closed -> raise :class:`GateClosed` (nak with backoff: retried until the
   gate opens or the intent goes stale);
4. size both legs to the venues' lot sizes and the cached free balances, check min qty /
   notional (else REJECTED, ack);
5. both legs concurrently as MARKET orders (see :mod:`arb_executor.legs`): on the intent's
   first JetStream delivery each leg is sent while its NEW is being stored, on a
   redelivery NEW is stored first and an earlier attempt is looked up on the venue;
6. legs' fills differ -> hedge the difference (:mod:`arb_executor.hedge`); what is left is
   ``arb_executor_unhedged_exposure`` and, if tradable, a blocking ``RiskEvent``.

Every event is published with PubAck before the handler returns (the bus acks after that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from arb_common.bus import Bus, SeenIds, delivery_count
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.errors import TemporaryError
from arb_common.messages import Envelope, Intent

from .balances import Balances
from .gate import Gate
from .hedge import HedgeConfig, Hedger, taker_fee
from .legs import EventSink, LegPlan, LegRunner, TradingVenue, client_order_id, plan_legs
from .order_machine import OrderMachine
from .paper import BookCache
from .venue_client import OrderRejected

logger = logging.getLogger(__name__)

INTENT_TO_ACK = Histogram(
    "arb_executor_intent_to_ack_seconds", "Intent publish -> all its events durable",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INTENTS = Gauge("arb_executor_intents_in_flight", "Intents being executed")
FOREIGN = Counter("arb_executor_foreign_mode_intents_total",
                  "Intents of another mode refused (acked, never executed)", ["mode"])
SHADOW_SLIPPAGE = Histogram(
    "arb_executor_shadow_slippage_bps",
    "Shadow mode: simulated fill vs the intent's expected price (positive = worse)", ["venue"],
    buckets=(-50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100),
)


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
        books: BookCache | None = None,
        balances: Balances | None = None,
        hedge: HedgeConfig | None = None,
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
        self.balances = balances
        self.hedger = Hedger(bus, self.runner, venues, books, balances, hedge)

    async def handle(self, env: Envelope, intent: Any, *, delivery: int | None = None) -> None:
        """The STRAT consumer's handler. ``delivery``: JetStream's delivery count of the intent
        (default: the running consumer's, :func:`arb_common.bus.delivery_count`)."""
        if not isinstance(intent, Intent):
            logger.warning("ignoring non-intent message type=%s id=%s", env.type, env.id)
            return
        if intent.intent_id in self.done:
            return
        if env.mode != self.bus.mode:
            # Mode is part of every namespace: a paper decision never reaches a live venue.
            FOREIGN.labels(env.mode).inc()
            logger.error("refusing an intent of another mode intent_id=%s intent_mode=%s "
                         "executor_mode=%s source=%s", intent.intent_id, env.mode,
                         self.bus.mode, env.source)
            return
        INTENTS.inc()
        try:
            await self._execute(env, intent, delivery=delivery or delivery_count())
        finally:
            INTENTS.dec()
        self.done.add(intent.intent_id)
        INTENT_TO_ACK.observe(max(0.0, (self.clock.now_ns() - env.ts) / 1e9))

    async def _execute(self, env: Envelope, intent: Intent, *,
                       delivery: int | None = None) -> None:
        age_ns = self.clock.now_ns() - env.ts
        unknown = [v for v in (intent.buy_venue, intent.sell_venue) if v not in self.venues]
        if unknown:
            await self._reject_all(intent, f"unknown venue {','.join(unknown)}")
            return
        if age_ns > self.max_age_ns:
            logger.warning("stale intent intent_id=%s age_s=%.3f", intent.intent_id, age_ns / 1e9)
            await self._stale(env, intent)
            return
        self.gate.check(intent.buy_venue, intent.sell_venue)  # GateClosed -> nak with delay
        try:
            rules_b = self.venues[intent.buy_venue].rules(intent.symbol)
            rules_s = self.venues[intent.sell_venue].rules(intent.symbol)
        except OrderRejected as exc:
            await self._reject_all(intent, exc.reason)
            return
        plans, reason = plan_legs(intent, rules_b, rules_s, self._balance_cap(intent))
        if reason:
            logger.warning("intent not tradable intent_id=%s reason=%s", intent.intent_id, reason)
            for p in plans:
                await self.runner.reject(p, intent, reason)
            return
        results = await asyncio.gather(
            *(self.runner.run(p, intent, self.venues[p.venue], delivery=delivery)
              for p in plans),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # Redelivery is safe: the NEW duplicate makes each leg query its coid first.
            raise errors[0]
        legs = [r for r in results if isinstance(r, OrderMachine)]
        recovering = any(p.coid in self.runner.recovered for p in plans)
        await self._after_legs(env, intent, legs, recovering)

    async def _unchecked(self, p: LegPlan, intent: Intent, why: str) -> OrderMachine:
        m = self.runner.machine(p, intent)
        ack = await self.sink.order(m)  # NEW: a duplicate means an earlier attempt existed
        if ack.duplicate or p.coid in self.attempted:
            logger.error("stale intent with an earlier attempt that cannot be checked "
                         "venue=%s client_order_id=%s why=%s: UNKNOWN for the reconciler",
                         p.venue, p.coid, why)
            m.transition("UNKNOWN", reason=f"stale intent; {why}")
        else:
            m.transition("REJECTED", reason="stale intent")
        await self.sink.order(m)
        return m

    async def _after_legs(self, env: Envelope, intent: Intent, legs: list[OrderMachine],
                          recovering: bool) -> None:
        self._book_fills(intent, legs)
        if self.bus.mode == "shadow":
            self._shadow_record(intent, legs)
        outcome = await self.hedger.even_out(env, intent, legs, recovering=recovering)
        self._book_fills(intent, outcome.hedges)
        if self.balances is not None and (any(m.state.filled_quantity for m in legs)
                                          or outcome.hedges):
            for v in (intent.buy_venue, intent.sell_venue):  # off the hot path, coalesced
                self.balances.refresh_soon(v)

    @staticmethod
    def _shadow_record(intent: Intent, legs: list[OrderMachine]) -> None:
        """What live would have done: each would-be order, its expected price (the intent's
        book walk) and the simulated fill (the ledger keeps both: /api/slippage?mode=shadow)."""
        for m in legs:
            s = m.state
            expected = intent.buy_price if s.side == "buy" else intent.sell_price
            if s.avg_price is None or expected <= 0:
                logger.info("shadow order (not sent) venue=%s side=%s quantity=%s status=%s "
                            "reason=%s", s.venue, s.side, s.quantity, s.status, s.reason)
                continue
            sign = 1 if s.side == "buy" else -1  # positive = worse than expected
            slip = sign * (s.avg_price - expected) / expected * 10_000
            SHADOW_SLIPPAGE.labels(s.venue).observe(float(slip))
            logger.info("shadow order (not sent) venue=%s side=%s quantity=%s filled=%s "
                        "expected=%s simulated=%s slippage_bps=%.2f", s.venue, s.side,
                        s.quantity, s.filled_quantity, expected, s.avg_price, slip)

    def _balance_cap(self, intent: Intent) -> tuple[Decimal, str] | None:
        """The most both venues' cached free balances allow (None: not known)."""
        if self.balances is None:
            return None
        best: tuple[Decimal, str] | None = None
        for side, venue, price in (("buy", intent.buy_venue, intent.buy_price),
                                   ("sell", intent.sell_venue, intent.sell_price)):
            tv = self.venues[venue]
            rules = tv.rules(intent.symbol)
            asset = rules.quote if side == "buy" else rules.base
            cap = self.balances.max_quantity(venue, side, rules.base, rules.quote,  # type: ignore[arg-type]
                                             price, taker_fee(tv))
            if cap is not None and (best is None or cap < best[0]):
                best = (cap, f"{asset} on {venue}")
        return best

    def _book_fills(self, intent: Intent, machines: list[OrderMachine]) -> None:
        if self.balances is None:
            return
        for m in machines:
            s = m.state
            if s.filled_quantity > 0 and s.avg_price is not None:
                rules = self.venues[s.venue].rules(s.symbol)
                self.balances.apply_fill(s.venue, s.side, rules.base, rules.quote,
                                         s.filled_quantity, s.avg_price, Decimal(0), "")

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

    async def _stale(self, env: Envelope, intent: Intent) -> None:
        """Drop a stale intent, unless an earlier attempt already put an order on a venue:
        then its truth is published and the legs are evened out (hedged) as usual.

        A leg that cannot be checked (venue unreachable, gate closed) is never taken for
        "not sent": its NEW is published again, and if JetStream already held it (an earlier
        attempt, maybe by a process that died) the leg is UNKNOWN — the reconciler resolves
        it by client order id; only a leg whose NEW is new here was surely never sent."""
        legs: list[OrderMachine] = []
        for p in self._plans_unsized(intent):
            venue = self.venues[p.venue]
            found = None
            unchecked: str | None = "gate closed"
            if self.gate.is_open(p.venue):
                try:
                    found = await venue.query(p.symbol, p.coid)
                    unchecked = None
                except (TemporaryError, OrderRejected) as exc:
                    unchecked = f"venue query failed: {exc}"[:200]
            if found is not None:
                m = self.runner.machine(
                    LegPlan(p.leg, p.venue, p.symbol, found.quantity, p.coid, p.expected_price),
                    intent)
                await self.runner.apply(m, found)
                legs.append(m)
            elif unchecked is not None:
                legs.append(await self._unchecked(p, intent, unchecked))
            else:
                legs.append(await self.runner.reject(p, intent, "stale intent"))
        unknown = any(m.status == "UNKNOWN" for m in legs)
        gates = all(self.gate.is_open(v) for v in (intent.buy_venue, intent.sell_venue))
        if len(legs) == 2 and (unknown or (gates and any(m.state.filled_quantity
                                                         for m in legs))):
            # Even out what filled; an unknown leg is not hedged around but reported (blocks).
            await self._after_legs(env, intent, legs, recovering=True)

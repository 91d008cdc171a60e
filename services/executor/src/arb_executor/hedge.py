"""Never leave a naked leg: even out an intent's two legs when their fills differ.

After both legs of an intent are terminal (or found on the venue after a restart), the base
quantity bought must equal the quantity sold. When it does not (a leg rejected, partially
filled, expired, or left unknown), the executor sends *hedge* orders (``role="hedge"`` on
their order events, same intent and trade id) for the difference, until the legs are even,
``hedge_timeout_s`` has passed, or ``hedge_max_attempts`` orders were tried:

- the side is fixed by the sign (bought more -> sell the difference, sold more -> buy it);
- the venue is chosen by policy: ``complete`` (the short leg's venue: finish what the intent
  meant to do), ``unwind`` (the long leg's venue: undo the excess), ``cheapest`` (whichever the
  current books make cheaper after the venue's taker fee; a venue without a fresh book comes
  last). A close is always completed first (unwinding a close would re-open the trade). A
  venue that refused or filled nothing is tried after the other one;
- the quantity is floored to the venue's lot step and capped by the cached free balance;
  below the venue's minimum quantity or notional on both venues it cannot be traded (dust).

Crash safety: hedge client order ids are deterministic (``hedge<n>:<venue>`` of the intent),
and when an intent is handled again (redelivery after a crash, a stale redelivery) every
possible hedge id is first looked up on both venues, so an earlier hedge is counted, never
sent twice. What is left afterwards is ``arb_executor_unhedged_exposure{symbol}``; if it is
tradable, a ``RiskEvent(kind="unhedged_exposure", blocked=True)`` stops new entries on that
symbol (the strategy's RiskGuard) until an operator clears it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter, Gauge, Histogram

from arb_common.bus import Bus
from arb_common.messages import Envelope, Intent, RiskEvent, Side
from arb_common.money import ZERO, D, floor_to_step, to_str

from .legs import LegPlan, LegRunner, TradingVenue, client_order_id
from .order_machine import OrderMachine
from .paper import BookCache, walk_book

if TYPE_CHECKING:
    from .balances import Balances

logger = logging.getLogger(__name__)

Policy = Literal["complete", "unwind", "cheapest"]

UNHEDGED = Gauge("arb_executor_unhedged_exposure",
                 "Base qty bought minus sold by the last intent of the symbol, after hedging",
                 ["symbol"])
MISMATCHES = Counter("arb_executor_leg_mismatch_total",
                     "Intents whose two legs filled different quantities", ["symbol"])
HEDGE_ORDERS = Counter("arb_executor_hedge_orders_total", "Hedge orders sent, by outcome",
                       ["venue", "outcome"])
HEDGE_RESULTS = Counter("arb_executor_hedge_results_total",
                        "Mismatched intents by how hedging ended "
                        "(hedged, dust, residual, unknown)", ["symbol", "result"])
HEDGE_SECONDS = Histogram(
    "arb_executor_hedge_seconds", "Legs found uneven -> even again (or given up)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(frozen=True)
class HedgeConfig:
    policy: Policy = "cheapest"
    timeout_s: float = 10.0
    max_attempts: int = 4


@dataclass(frozen=True)
class HedgeOutcome:
    residual: Decimal
    hedges: list[OrderMachine]
    seconds: float = 0.0


@dataclass(frozen=True)
class _Choice:
    venue: str
    quantity: Decimal
    price: Decimal


def net_bought(machines: Sequence[OrderMachine]) -> Decimal:
    """Base bought minus base sold over ``machines`` (filled quantities)."""
    total = ZERO
    for m in machines:
        q = m.state.filled_quantity
        total += q if m.state.side == "buy" else -q
    return total


def hedge_coid(intent_id: str, venue: str, n: int) -> str:
    return client_order_id(intent_id, f"hedge{n}:{venue}", role="hedge")


def taker_fee(venue: TradingVenue) -> Decimal:
    fee = getattr(venue, "taker_fee", None)
    if fee is None:
        fee = getattr(getattr(venue, "config", None), "taker_fee", "0.001")
    return fee if isinstance(fee, Decimal) else D(str(fee))


class Hedger:
    def __init__(self, bus: Bus, runner: LegRunner, venues: Mapping[str, TradingVenue],
                 books: BookCache | None, balances: Balances | None,
                 cfg: HedgeConfig | None = None) -> None:
        self.bus = bus
        self.runner = runner
        self.venues = venues
        self.books = books
        self.balances = balances
        self.cfg = cfg or HedgeConfig()

    # ------------------------------------------------------------ entry point
    async def even_out(self, env: Envelope, intent: Intent, legs: Sequence[OrderMachine], *,
                       recovering: bool) -> HedgeOutcome:
        hedges = await self._earlier_hedges(intent) if recovering else []
        diff = net_bought([*legs, *hedges])
        if diff == 0 and not hedges and not _unknown(legs):
            UNHEDGED.labels(intent.symbol).set(0)
            return HedgeOutcome(ZERO, [])
        started = time.monotonic()
        if diff != 0:
            MISMATCHES.labels(intent.symbol).inc()
            logger.warning("legs uneven intent_id=%s symbol=%s bought_minus_sold=%s legs=[%s]",
                           intent.intent_id, intent.symbol, to_str(diff), _describe(legs))
        diff = await self._hedge_loop(intent, legs, hedges, diff, started)
        seconds = time.monotonic() - started
        await self._report(env, intent, legs, hedges, diff, seconds)
        return HedgeOutcome(diff, hedges, seconds)

    async def _hedge_loop(self, intent: Intent, legs: Sequence[OrderMachine],
                          hedges: list[OrderMachine], diff: Decimal, started: float) -> Decimal:
        failed: set[str] = set()
        used = {m.state.client_order_id for m in hedges}
        attempts = 0
        while diff != 0 and attempts < self.cfg.max_attempts \
                and time.monotonic() - started < self.cfg.timeout_s \
                and not _unknown([*legs, *hedges]):
            side: Side = "sell" if diff > 0 else "buy"
            choice = self._choose(intent, side, abs(diff), failed)
            if choice is None and failed:
                failed.clear()  # both refused once: try them again (after a pause)
                await asyncio.sleep(min(0.2 * attempts, 1.0))
                choice = self._choose(intent, side, abs(diff), failed)
            if choice is None:
                break
            n = next(i for i in range(1, 10_000)
                     if hedge_coid(intent.intent_id, choice.venue, i) not in used)
            coid = hedge_coid(intent.intent_id, choice.venue, n)
            used.add(coid)
            plan = LegPlan(side, choice.venue, intent.symbol, choice.quantity, coid,
                           choice.price, role="hedge")
            logger.warning("hedging intent_id=%s symbol=%s side=%s venue=%s quantity=%s "
                           "attempt=%d", intent.intent_id, intent.symbol, side, choice.venue,
                           to_str(choice.quantity), attempts + 1)
            m = await self.runner.run(plan, intent, self.venues[choice.venue])
            attempts += 1
            hedges.append(m)
            HEDGE_ORDERS.labels(choice.venue, _outcome(m)).inc()
            # A venue that filled nothing goes to the back; one that filled part (its book
            # ran short) is tried again first, the remaining attempt(s) permitting, so a close
            # ends flat rather than as a leftover position on the other venue.
            if m.state.filled_quantity == 0 or attempts >= self.cfg.max_attempts - 1:
                failed.add(choice.venue)
            diff = net_bought([*legs, *hedges])
        return diff

    # ------------------------------------------------------------ venue choice
    def _choose(self, intent: Intent, side: Side, quantity: Decimal,
                failed: set[str]) -> _Choice | None:
        """The venue (in policy order, refused ones last) that can trade the most of it."""
        # The short leg's venue finishes the intent; the long leg's venue undoes the excess.
        complete = intent.sell_venue if side == "sell" else intent.buy_venue
        unwind = intent.buy_venue if side == "sell" else intent.sell_venue
        order = [complete, unwind]
        if self.cfg.policy == "unwind" and intent.action == "open":
            order = [unwind, complete]
        elif self.cfg.policy == "cheapest" and intent.action == "open":
            order.sort(key=lambda v: self._cost(v, intent.symbol, side, quantity))
        order.sort(key=lambda v: v in failed)  # stable: policy order among equals
        for venue in order:
            choice = self._size(venue, intent, side, quantity)
            if choice is not None:
                return choice
        return None

    def _cost(self, venue: str, symbol: str, side: Side, quantity: Decimal) -> Decimal:
        """Quote paid per base unit (buy) or minus quote received (sell), after the fee;
        a venue with no usable book sorts last."""
        vwap = self._vwap(venue, symbol, side, quantity)
        if vwap is None:
            return Decimal("Infinity")
        fee = taker_fee(self.venues[venue])
        return vwap * (1 + fee) if side == "buy" else -(vwap * (1 - fee))

    def _vwap(self, venue: str, symbol: str, side: Side, quantity: Decimal) -> Decimal | None:
        if self.books is None:
            return None
        book = self.books.get(venue, symbol)
        if book is None:
            return None
        taken = walk_book(book.asks if side == "buy" else book.bids, quantity)
        got = sum((q for _, q in taken), ZERO)
        if got < quantity or got == 0:
            return None
        return sum((p * q for p, q in taken), ZERO) / got

    def _size(self, venue: str, intent: Intent, side: Side,
              quantity: Decimal) -> _Choice | None:
        tv = self.venues.get(venue)
        if tv is None:
            return None
        try:
            rules = tv.rules(intent.symbol)
        except Exception:  # noqa: BLE001 - not listed / markets not loaded: not there now
            return None
        price = self._vwap(venue, intent.symbol, side, quantity) or (
            intent.buy_price if venue == intent.buy_venue else intent.sell_price)
        qty = quantity
        if self.balances is not None:
            cap = self.balances.max_quantity(venue, side, rules.base, rules.quote, price,
                                             taker_fee(tv))
            if cap is not None:
                qty = min(qty, cap)
        qty = floor_to_step(qty, rules.lot_step)
        if qty <= 0 or qty < rules.min_qty or qty * price < rules.min_notional:
            return None
        return _Choice(venue, qty, price)

    # ------------------------------------------------------------ recovery
    async def _earlier_hedges(self, intent: Intent) -> list[OrderMachine]:
        """Hedges an earlier attempt at this intent left on the venues (looked up by their
        deterministic ids; raises if a venue cannot answer: the intent is retried)."""
        found: list[OrderMachine] = []
        for n in range(1, self.cfg.max_attempts + 1):
            for venue in dict.fromkeys((intent.buy_venue, intent.sell_venue)):
                tv = self.venues.get(venue)
                if tv is None:
                    continue
                coid = hedge_coid(intent.intent_id, venue, n)
                order = await tv.query(intent.symbol, coid)
                if order is None:
                    continue
                side: Side = order.side or ("buy" if venue == intent.buy_venue else "sell")
                plan = LegPlan(side, venue, intent.symbol, order.quantity, coid,
                               order.avg_price or intent.buy_price, role="hedge")
                m = self.runner.machine(plan, intent)
                await self.runner.apply(m, order)  # its events (idempotent msg ids)
                found.append(m)
        if found:
            logger.info("earlier hedges found intent_id=%s hedges=[%s]", intent.intent_id,
                        _describe(found))
        return found

    # ------------------------------------------------------------ outcome
    async def _report(self, env: Envelope, intent: Intent, legs: Sequence[OrderMachine],
                      hedges: Sequence[OrderMachine], residual: Decimal,
                      seconds: float) -> None:
        sym = intent.symbol
        UNHEDGED.labels(sym).set(float(residual))
        HEDGE_SECONDS.observe(seconds)
        detail = (f"intent {intent.intent_id}: bought-sold={to_str(residual)} after "
                  f"{len(hedges)} hedge(s) in {seconds:.3f}s; legs [{_describe(legs)}]; "
                  f"hedges [{_describe(hedges)}]")
        if _unknown([*legs, *hedges]):
            # An order whose outcome is unknown may have filled: hedging around it could
            # double the exposure instead of closing it. The reconciler resolves it.
            HEDGE_RESULTS.labels(sym, "unknown").inc()
            logger.error("order outcome unknown, not hedging intent_id=%s symbol=%s; new "
                         "entries blocked: %s", intent.intent_id, sym, detail)
            kind, blocked = "unknown_outcome", True
        elif residual == 0:
            HEDGE_RESULTS.labels(sym, "hedged").inc()
            logger.warning("legs evened out intent_id=%s symbol=%s hedges=%d seconds=%.3f",
                           intent.intent_id, sym, len(hedges), seconds)
            kind, blocked = "hedged", False
        elif self._tradable(intent, residual):
            HEDGE_RESULTS.labels(sym, "residual").inc()
            logger.error("UNHEDGED exposure left intent_id=%s symbol=%s residual=%s; new "
                         "entries blocked: %s", intent.intent_id, sym, to_str(residual), detail)
            kind, blocked = "unhedged_exposure", True
        else:
            HEDGE_RESULTS.labels(sym, "dust").inc()
            logger.warning("residual below the venues' minimums intent_id=%s symbol=%s "
                           "residual=%s", intent.intent_id, sym, to_str(residual))
            kind, blocked = "hedge_dust", False
        event = RiskEvent(symbol=sym, kind=kind, blocked=blocked, detail=detail[:1000])
        await self.bus.publish(self.bus.subjects.risk(sym), event,
                               f"risk:{sym}:{kind}:{intent.intent_id}")

    def _tradable(self, intent: Intent, residual: Decimal) -> bool:
        """Could the residual be traded on either venue (ignoring balances)?"""
        q = abs(residual)
        for venue in (intent.buy_venue, intent.sell_venue):
            tv = self.venues.get(venue)
            if tv is None:
                continue
            try:
                r = tv.rules(intent.symbol)
            except Exception:  # noqa: BLE001
                continue
            qty = floor_to_step(q, r.lot_step)
            price = intent.buy_price if venue == intent.buy_venue else intent.sell_price
            if qty > 0 and qty >= r.min_qty and qty * price >= r.min_notional:
                return True
        return False


def _unknown(machines: Sequence[OrderMachine]) -> bool:
    return any(m.status == "UNKNOWN" for m in machines)


def _outcome(m: OrderMachine) -> str:
    s = m.state
    if s.filled_quantity >= s.quantity and s.quantity > 0:
        return "filled"
    if s.filled_quantity > 0:
        return "partial"
    return {"REJECTED": "rejected", "UNKNOWN": "unknown"}.get(s.status, "unfilled")


def _describe(machines: Sequence[OrderMachine]) -> str:
    return ", ".join(f"{m.state.side}@{m.state.venue}={m.status}/{to_str(m.state.filled_quantity)}"
                     for m in machines)

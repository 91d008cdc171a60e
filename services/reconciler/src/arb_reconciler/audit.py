"""What the venue did that the ledger does not know: missing fills, external orders and
trades, balance drift (live mode; paper and shadow orders are not on the venue).

- **Missing fills** (:mod:`arb_reconciler.trades`): trades of our orders absent from the
  ledger are published as fills, exactly once (deterministic msg ids, ledger unique on the
  venue trade id), with the order's venue state as a correction.
- **External orders and trades** (not ours: a manual trade): never silently adopted, never
  treated as flat: recorded as ``external_order`` / ``external_trade``, counted, logged at
  ERROR, then ``ARB_RECON_EXTERNAL_POLICY``: ``ignore`` (recorded only), ``adopt`` (its order
  and fills are published into the ledger as ``trade_id="external"``, so positions include
  them) or ``halt`` (default: new entries on the venue stop until an operator acknowledges,
  ``ctl.reconciler.ack`` / ``arbctl ack VENUE``).
- **Balance drift**: expected = the venue's balances at the baseline (first audited run, or
  the last acknowledgement) + every ledger fill of this mode on the venue since then (fees
  in their asset). A difference beyond ``ARB_RECON_BALANCE_TOLERANCE`` (relative, with a
  tiny absolute floor) on two consecutive checks is ``balance_drift``: alerted, and new
  entries on the venue halted until it is back within tolerance or acknowledged.

A halt keeps the venue's gate open for exits and hedges (``VenueReady.ready`` stays true);
``VenueReady.halted`` tells the strategy not to open anything there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter, Gauge

from arb_common.messages import Discrepancy, FillEvent, OrderEvent, Side
from arb_common.money import ZERO, to_str

if TYPE_CHECKING:
    from arb_executor.venue_client import VenueOrder

    from .reconcile import Reconciler
    from .trades import VenueTrade

logger = logging.getLogger(__name__)

ExternalPolicy = Literal["ignore", "adopt", "halt"]

EXTERNAL = Counter("arb_reconciler_external_total", "External orders/trades found on a venue",
                   ["venue", "kind", "policy"])
DRIFT = Gauge("arb_reconciler_balance_drift", "Venue balance minus the ledger's expectation",
              ["venue", "asset"])
HALTED = Gauge("arb_reconciler_venue_halted", "1 while new entries on the venue are halted",
               ["venue"])
SLACK_S = 2.0  # an audit this close to due runs with the run at hand (ticks of a few s)
MISSING_FILLS = Counter("arb_reconciler_missing_fills_total",
                        "Fills found on the venue and recorded by the reconciler", ["venue"])


@dataclass(frozen=True)
class AuditPolicy:
    external: ExternalPolicy = "halt"
    lookback_s: float = 86_400.0
    trades_interval_s: float = 30.0
    balance_interval_s: float = 60.0
    balance_tolerance: Decimal = Decimal("0.000001")
    stale_grace_s: float = 60.0
    # A trade younger than this may still be on its way to the ledger: looked at next run.
    missing_grace_s: float = 10.0
    # An in-flight order younger than this is the executor's to resolve (its own window).
    inflight_min_age_s: float = 15.0


@dataclass
class _VenueAudit:
    baseline_ts: datetime | None = None
    baseline: dict[str, Decimal] | None = None
    last_trades: float = 0.0
    last_balances: float = 0.0
    drift_strikes: int = 0
    drift: str = ""  # current drift halt reason
    external: str = ""  # current external-policy halt reason
    seen_external: set[str] = field(default_factory=set)
    # base/quote/fee effects of external trades recorded under "ignore" since the baseline:
    # known and alerted, so they are part of the expectation (no drift halt for them)
    external_deltas: dict[str, Decimal] = field(default_factory=dict)


class Audit:
    def __init__(self, rec: Reconciler) -> None:
        self.rec = rec
        self.state: dict[str, _VenueAudit] = {}

    def _st(self, venue: str) -> _VenueAudit:
        st = self.state.get(venue)
        if st is None:
            st = self.state[venue] = _VenueAudit()
        return st

    def due(self, venue: str, *, slack_s: float = 0.0) -> bool:
        """Is the trade or the balance audit of ``venue`` due (within ``slack_s``)?"""
        st = self._st(venue)
        now = time.monotonic() + slack_s
        return (now - st.last_trades >= self.rec.policy.trades_interval_s
                or now - st.last_balances >= self.rec.policy.balance_interval_s)

    # ------------------------------------------------------------ halts
    def halt_reason(self, venue: str) -> str:
        st = self._st(venue)
        reason = "; ".join(r for r in (st.external, st.drift) if r)
        HALTED.labels(venue).set(1 if reason else 0)
        return reason

    def acknowledge(self, venue: str) -> str:
        """An operator looked: clear the halts, keep the externals seen as known, and take
        the next balance observation as the new baseline."""
        st = self._st(venue)
        was = self.halt_reason(venue)
        st.external, st.drift, st.drift_strikes = "", "", 0
        st.baseline, st.baseline_ts = None, None
        st.external_deltas = {}
        st.last_balances = 0.0
        HALTED.labels(venue).set(0)
        logger.warning("venue halt acknowledged venue=%s was=%s", venue, was)
        return was

    # ------------------------------------------------------------ external
    async def external_open(self, venue: str, d: Discrepancy,
                            venue_open: list[VenueOrder]) -> Discrepancy | None:
        order = next((o for o in venue_open if o.client_order_id == d.client_order_id), None)
        return await self._external(venue, "external_order", d.client_order_id or "", d.detail,
                                    order, [])

    async def _external(self, venue: str, kind: str, key: str, detail: str,
                        order: VenueOrder | None, trades: list[VenueTrade]
                        ) -> Discrepancy | None:
        st = self._st(venue)
        policy = self.rec.policy.external
        first = key not in st.seen_external
        if first:
            st.seen_external.add(key)
            EXTERNAL.labels(venue, kind, policy).inc()
            logger.error("EXTERNAL activity on venue=%s kind=%s %s policy=%s", venue, kind,
                         detail, policy)
        if not first and policy != "adopt":
            return None  # reported once per process (and again after a restart)
        resolution = "ignored (policy)"
        if policy == "ignore":
            self._expect_external(st, trades)
        if policy == "adopt" and order is not None:
            await self._adopt(venue, order, trades)
            resolution = "adopted into the ledger (trade_id=external)"
        elif policy == "halt":
            resolution = "halted new entries (policy); acknowledge to resume"
            if first:
                st.external = f"external {kind} on {venue}: {detail}"[:300]
        return Discrepancy(kind=kind, detail=detail, resolution=resolution,
                           client_order_id=order.client_order_id if order else None)

    @staticmethod
    def _expect_external(st: _VenueAudit, trades: list[VenueTrade]) -> None:
        if st.baseline_ts is None:
            return  # not baselined yet: the baseline observation will include them
        after = st.baseline_ts.timestamp() * 1000
        for t in trades:
            if t.ts_ms <= after:
                continue
            base, _, quote = t.symbol.partition("-")
            sign = 1 if t.side == "buy" else -1
            d = st.external_deltas
            d[base] = d.get(base, ZERO) + sign * t.quantity
            d[quote] = d.get(quote, ZERO) - sign * t.quantity * t.price
            if t.fee_asset:
                d[t.fee_asset] = d.get(t.fee_asset, ZERO) - t.fee

    async def _adopt(self, venue: str, order: VenueOrder, trades: list[VenueTrade]) -> None:
        bus, subj = self.rec.bus, self.rec.bus.subjects
        side: Side = order.side or (trades[0].side if trades else "buy")
        now = self.rec.clock.now_ns()
        await bus.publish(subj.order(venue, order.symbol), OrderEvent(
            venue=venue, symbol=order.symbol, client_order_id=order.client_order_id, side=side,
            quantity=order.quantity, filled_quantity=order.filled, status=order.status,
            venue_order_id=order.venue_order_id, avg_price=order.avg_price,
            trade_id="external", reason="reconciler: external order adopted", ts=now),
            f"order:{order.client_order_id}:{order.status}:{to_str(order.filled)}")
        for t in trades:
            await self._publish_fill(venue, order, t, "external")

    async def _publish_fill(self, venue: str, order: Any, t: VenueTrade,
                            trade_id: str, intent_id: str = "") -> None:
        bus, subj = self.rec.bus, self.rec.bus.subjects
        await bus.publish(subj.fill(venue, t.symbol), FillEvent(
            venue=venue, symbol=t.symbol, client_order_id=order.client_order_id,
            venue_trade_id=t.trade_id, side=t.side, quantity=t.quantity, price=t.price,
            fee=t.fee, fee_asset=t.fee_asset, ts=t.ts_ms * 1_000_000,
            venue_order_id=t.venue_order_id, intent_id=intent_id, trade_id=trade_id),
            f"fill:{venue}:{t.trade_id}")

    # ------------------------------------------------------------ trades
    async def trades(self, venue: str, client: Any, *, force: bool) -> list[Discrepancy]:
        st = self._st(venue)
        if not hasattr(client, "my_trades") or not self.rec.symbols:
            return []
        now = time.monotonic()
        if not force and now - st.last_trades < self.rec.policy.trades_interval_s - SLACK_S:
            return []
        rec = self.rec
        since = await rec._db("audit start", rec.ledger.activity_since, venue,
                              timedelta(seconds=rec.policy.lookback_s))
        known = await rec._db("fill ids", rec.ledger.fill_ids, venue, since)
        since_ms = int(since.timestamp() * 1000)
        found: list[Discrepancy] = []
        missing: list[VenueTrade] = []
        for symbol in rec.symbols:
            trades, truncated = await rec._venue(f"my trades {symbol}",
                                                 client.my_trades(symbol, since_ms))
            young = (time.time() - rec.policy.missing_grace_s) * 1000
            missing.extend(t for t in trades if t.trade_id not in known and t.ts_ms <= young)
            if truncated:
                found.append(Discrepancy(kind="audit_truncated", resolution="unresolved",
                                         detail=f"{symbol}: more trades than one run reads"))
        by_order: dict[str, list[VenueTrade]] = {}
        for t in missing:
            by_order.setdefault(t.venue_order_id, []).append(t)
        ours = await rec._db("orders by id", rec.ledger.orders_by_venue_id, venue,
                             list(by_order))
        for oid, trades in by_order.items():
            d = await self._missing(venue, client, oid, trades, ours.get(oid))
            if d is not None:
                found.append(d)
        st.last_trades = now
        return found

    async def _missing(self, venue: str, client: Any, oid: str, trades: list[VenueTrade],
                       lo: Any) -> Discrepancy | None:
        rec = self.rec
        qty = sum((t.quantity for t in trades), ZERO)
        detail = (f"{trades[0].symbol} order {oid}: {len(trades)} trade(s) qty={to_str(qty)} "
                  f"not in the ledger")
        order = await rec._venue("order by id", client.order_by_id(trades[0].symbol, oid))
        if lo is None and not _ours(order.client_order_id):
            return await self._external(venue, "external_trade", oid, detail, order, trades)
        for t in trades:
            await self._publish_fill(venue, lo or order, t, lo.trade_id if lo else "",
                                     lo.intent_id if lo else "")
        MISSING_FILLS.labels(venue).inc(len(trades))
        if lo is not None:
            await rec._correct(lo, order, "missing_fill")
        else:
            await rec._record_unknown(venue, order)
        logger.warning("missing fills recorded venue=%s order=%s coid=%s trades=%d", venue,
                       oid, order.client_order_id, len(trades))
        return Discrepancy(kind="missing_fill", detail=detail,
                           resolution=f"recorded {len(trades)} fill(s)",
                           client_order_id=order.client_order_id)

    # ------------------------------------------------------------ balances
    async def balances(self, venue: str, observed: Mapping[str, tuple[Decimal, Decimal]], *,
                       force: bool) -> list[Discrepancy]:
        st = self._st(venue)
        now = time.monotonic()
        if not force and now - st.last_balances < self.rec.policy.balance_interval_s - SLACK_S:
            return []
        st.last_balances = now
        totals = {a: f + lk for a, (f, lk) in observed.items()}
        at = datetime.now(UTC)
        if st.baseline is None or st.baseline_ts is None:
            st.baseline, st.baseline_ts, st.external_deltas = totals, at, {}
            return []
        fills = await self.rec._db("fills since baseline", self.rec.ledger.fills_after, venue,
                                   st.baseline_ts)
        expected = dict(st.baseline)
        for asset, delta in st.external_deltas.items():
            expected[asset] = expected.get(asset, ZERO) + delta
        for f in fills:
            base, _, quote = f.symbol.partition("-")
            sign = 1 if f.side == "buy" else -1
            expected[base] = expected.get(base, ZERO) + sign * f.quantity
            expected[quote] = expected.get(quote, ZERO) - sign * f.quantity * f.price
            if f.fee_asset:
                expected[f.fee_asset] = expected.get(f.fee_asset, ZERO) - f.fee
        off = []
        for asset in sorted(set(expected) | set(totals)):
            diff = totals.get(asset, ZERO) - expected.get(asset, ZERO)
            DRIFT.labels(venue, asset).set(float(diff))
            limit = max(Decimal("1e-8"), abs(expected.get(asset, ZERO)) *
                        self.rec.policy.balance_tolerance)
            if abs(diff) > limit:
                off.append(f"{asset} venue={to_str(totals.get(asset, ZERO))} "
                           f"expected={to_str(expected.get(asset, ZERO))}")
        if not off:
            if st.drift:
                logger.warning("balance drift resolved venue=%s", venue)
            st.drift, st.drift_strikes = "", 0
            return []
        st.drift_strikes += 1
        detail = "; ".join(off)
        if st.drift_strikes < 2:  # a fill in flight to the ledger: look again next time
            st.last_balances = 0.0
            return []
        if not st.drift:
            logger.error("BALANCE DRIFT venue=%s %s: new entries halted", venue, detail)
        st.drift = f"balance drift on {venue}: {detail}"[:300]
        return [Discrepancy(kind="balance_drift", detail=detail[:500],
                            resolution="halted new entries; resolve or acknowledge")]


def _ours(coid: str) -> bool:
    from .reconcile import OUR_COID

    return bool(OUR_COID.match(coid))

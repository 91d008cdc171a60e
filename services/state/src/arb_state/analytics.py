"""Derived ledger data: intents from STRAT, slippage per fill, equity history.

- :func:`ingest_intents` / :func:`intent_batch_handler`: ``strat.intent.<symbol>`` messages
  into ``intents``, ``ON CONFLICT (mode, intent_id) DO NOTHING`` (a redelivery or re-publish
  changes nothing); the bus acks after the commit.
- :func:`derive_slippage`: an idempotent, bounded job joining fills to their intents
  (``fill.intent_id = intent.intent_id``, same mode): expected price = the intent's
  ``buy_price`` for a buy fill, ``sell_price`` for a sell fill; ``slippage_bps`` and
  ``slippage_quote`` are positive when the fill is worse than expected (a buy paid more, a
  sell got less). A fill whose intent has not arrived yet is picked up by a later run.
  Hedge fills (client order id ``h...``, ``OrderEvent.role == "hedge"``) are left out: a hedge
  evens out uneven legs at whatever the market then offers, not at the intent's price. Each
  derived row is observed in ``arb_state_slippage_bps{venue,symbol}``.
- :func:`record_equity`: one ``equity_history`` row per running session of a mode,
  realized from ``positions.realized_pnl``, unrealized from marks (:mod:`arb_state.marks`);
  :func:`export_equity` sets ``arb_state_equity`` / ``arb_state_unrealized_pnl{symbol}``.
- :func:`slippage_loop` / :func:`equity_loop`: the periodic jobs as the service runs them
  (a failed run is counted, logged and retried at the next tick; PostgreSQL being down never
  stops them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import and_, case, exists, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from arb_common.bus import BatchHandler, Delivery
from arb_common.ledger import (
    EquityHistory,
    Fill,
    IntentRow,
    Position,
    SessionRow,
    SlippageAnalysis,
)
from arb_common.messages import Envelope, Intent
from arb_common.money import BPS, ZERO, to_str

from .ingest import ns_to_dt
from .marks import MarkSource, resolve_marks, unrealized

logger = logging.getLogger(__name__)

INTENTS = Counter("arb_state_intents_ingested_total", "Intents newly written to the ledger")
SLIPPAGE_ROWS = Counter("arb_state_slippage_rows_total", "slippage_analysis rows derived")
EQUITY_ROWS = Counter("arb_state_equity_rows_total", "equity_history rows written")
# ``task``, not ``job``: Prometheus' target label ``job`` would overwrite it on scrape.
JOB_ERRORS = Counter("arb_state_analytics_errors_total", "Analytics job runs that failed",
                     ["task"])  # fmt: skip
# Negative buckets (better than expected): prometheus-client then exports no ``_sum``.
SLIPPAGE_BPS = Histogram(
    "arb_state_slippage_bps", "Leg fill price vs its intent's expected price (bps, > 0 = worse)",
    ["venue", "symbol"], buckets=(-50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100),
)  # fmt: skip
EQUITY = Gauge("arb_state_equity",
               "Equity: realized + unrealized PnL, quote asset (own mode+session)")
UNREALIZED = Gauge("arb_state_unrealized_pnl",
                   "Unrealized PnL of open positions at their marks, quote (own mode+session)",
                   ["symbol"])  # fmt: skip
# Client order ids of hedge orders start with this (arb_executor.legs.client_order_id).
HEDGE_COID_PREFIX = "h"

EngineGetter = Callable[[], Engine | None]

# ------------------------------------------------------------------ intents


def _intent_row(env: Envelope, it: Intent) -> dict[str, Any]:
    return {
        "mode": env.mode, "session": env.session, "intent_id": it.intent_id,
        "trade_id": it.trade_id, "symbol": it.symbol, "action": it.action,
        "buy_venue": it.buy_venue, "sell_venue": it.sell_venue, "quantity": it.quantity,
        "buy_price": it.buy_price, "sell_price": it.sell_price,
        "net_spread_bps": it.net_spread_bps, "reason": it.reason, "ts": ns_to_dt(env.ts),
        "origin_ts": it.origin_ts,
    }  # fmt: skip


def ingest_intents(engine: Engine, events: Sequence[tuple[Envelope, Any]]) -> int:
    """Write the :class:`Intent` events (others are ignored) in one transaction; returns how
    many were new."""
    rows = [_intent_row(env, p) for env, p in events if isinstance(p, Intent)]
    if not rows:
        return 0
    stmt = (
        pg_insert(IntentRow).values(rows)
        .on_conflict_do_nothing(index_elements=[IntentRow.mode, IntentRow.intent_id])
        .returning(IntentRow.id)
    )  # fmt: skip
    with engine.begin() as conn:
        return len(conn.execute(stmt).all())


def intent_batch_handler(engine: Engine | EngineGetter) -> BatchHandler:
    """A ``Bus.consume(batch_handler=...)`` for the STRAT stream's ``strat.intent.*``.

    Raises while the ledger is unreachable, so the bus naks the batch and redelivers it later
    (acks come only after this returns, i.e. after the commit).
    """

    async def handle(deliveries: Sequence[Delivery]) -> None:
        eng = engine() if callable(engine) else engine
        if eng is None:
            raise RuntimeError("ledger not connected yet")
        events = [(d.env, d.payload) for d in deliveries]
        new = await asyncio.to_thread(ingest_intents, eng, events)
        INTENTS.inc(new)
        logger.debug("intents ingested count=%d new=%d", len(events), new)

    return handle


# ------------------------------------------------------------------ slippage


def derive_slippage(engine: Engine, *, limit: int = 1000, since: datetime | None = None) -> int:
    """Insert ``slippage_analysis`` rows for up to ``limit`` fills (oldest first) that have a
    matching intent and no row yet; returns how many were inserted (0 = caught up).

    ``since`` restricts the scan to fills with ``ts >= since`` (partition pruning): a caller
    running this periodically can pass a lookback once it has caught up once.
    """
    f, i, sa = Fill, IntentRow, SlippageAnalysis
    is_buy = f.side == "buy"
    expected = case((is_buy, i.buy_price), else_=i.sell_price)
    worse_by = case((is_buy, f.price - expected), else_=expected - f.price)
    done = exists().where(
        sa.mode == f.mode, sa.venue == f.venue, sa.venue_trade_id == f.venue_trade_id
    )
    conds = [f.intent_id != "", expected > 0, ~done,
             ~f.client_order_id.startswith(HEDGE_COID_PREFIX)]
    if since is not None:
        conds.append(f.ts >= since)
    src = (
        select(
            f.mode, f.session, f.venue, f.symbol, f.client_order_id, f.venue_trade_id,
            f.intent_id, f.trade_id, f.side, f.quantity, expected, f.price,
            worse_by / expected * BPS, worse_by * f.quantity, f.ts,
        )
        .join(i, and_(i.mode == f.mode, i.intent_id == f.intent_id))
        .where(*conds).order_by(f.ts, f.id).limit(limit)
    )  # fmt: skip
    cols = ["mode", "session", "venue", "symbol", "client_order_id", "venue_trade_id",
            "intent_id", "trade_id", "side", "quantity", "expected_price", "realized_price",
            "slippage_bps", "slippage_quote", "ts"]  # fmt: skip
    stmt = (
        pg_insert(sa).from_select(cols, src)
        .on_conflict_do_nothing(index_elements=[sa.mode, sa.venue, sa.venue_trade_id])
        .returning(sa.venue, sa.symbol, sa.slippage_bps)
    )  # fmt: skip
    with engine.begin() as conn:
        rows = conn.execute(stmt).all()
    for venue, symbol, bps in rows:  # committed
        SLIPPAGE_BPS.labels(venue, symbol).observe(float(bps))
    return len(rows)


# ------------------------------------------------------------------ equity


@dataclass(frozen=True)
class EquityPoint:
    mode: str
    session: str
    ts: datetime
    realized: Decimal
    unrealized: Decimal
    # symbol -> unrealized PnL of the session's positions in it (0 once flat)
    unrealized_by_symbol: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def equity(self) -> Decimal:
        return self.realized + self.unrealized

    def hot_fields(self) -> dict[str, str]:
        """The ``equity:_:latest`` hash (Redis hot state); ``ts`` in ns since the epoch."""
        ts_ns = int(self.ts.timestamp()) * 1_000_000_000 + self.ts.microsecond * 1000
        return {"equity": to_str(self.equity), "realized": to_str(self.realized),
                "unrealized": to_str(self.unrealized), "ts": str(ts_ns)}  # fmt: skip


def record_equity(
    engine: Engine, marks: MarkSource | None, mode: str, *, now: datetime | None = None
) -> list[EquityPoint]:
    """Append one ``equity_history`` row per running session of ``mode`` and return them.

    Marks: the live book mid, else the mode's last fill price of that venue+symbol.
    """
    ts = now or datetime.now(UTC)
    s, p = SessionRow, Position
    with engine.begin() as conn:
        sessions = conn.execute(
            select(s.id).where(s.mode == mode, s.status == "running").order_by(s.id)
        ).scalars().all()  # fmt: skip
        if not sessions:
            return []
        rows = conn.execute(select(p).where(p.mode == mode, p.session.in_(sessions))).all()
        open_keys = {(r.venue, r.symbol) for r in rows if r.quantity != 0}
        resolved = resolve_marks(conn, open_keys, marks, [Fill.mode == mode])
        realized = dict.fromkeys(sessions, ZERO)
        unreal: dict[str, dict[str, Decimal]] = {sid: {} for sid in sessions}
        for r in rows:
            realized[r.session] += r.realized_pnl
            mark = resolved.get((r.venue, r.symbol))
            per = unreal[r.session]
            per[r.symbol] = per.get(r.symbol, ZERO) + unrealized(r.quantity, r.avg_price, mark)
        points = [EquityPoint(mode, sid, ts, realized[sid], sum(unreal[sid].values(), ZERO),
                              unreal[sid]) for sid in sessions]
        conn.execute(insert(EquityHistory), [
            {"mode": pt.mode, "session": pt.session, "ts": pt.ts, "equity": pt.equity,
             "realized": pt.realized, "unrealized": pt.unrealized}
            for pt in points
        ])  # fmt: skip
    return points


def export_equity(points: Iterable[EquityPoint], session: str) -> None:
    """The gauges of ``session`` (the service's own; the mode is the run's)."""
    for pt in points:
        if pt.session == session:
            EQUITY.set(float(pt.equity))
            for symbol, value in pt.unrealized_by_symbol.items():
                UNREALIZED.labels(symbol).set(float(value))


def init_series(venues: Iterable[str], symbols: Iterable[str]) -> None:
    """Create the labelled series of the configured venues and symbols at start (empty
    histograms, 0 unrealized), so they are on /metrics before the first fill."""
    venues = list(venues)
    for symbol in symbols:
        UNREALIZED.labels(symbol)
        for venue in venues:
            SLIPPAGE_BPS.labels(venue, symbol)
    for task in ("slippage", "equity"):
        JOB_ERRORS.labels(task)


# ------------------------------------------------------------------ periodic jobs


async def _tick(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def slippage_loop(
    engine: EngineGetter, stopping: asyncio.Event, interval_s: float, *,
    limit: int = 1000, lookback: timedelta = timedelta(days=1),
) -> None:  # fmt: skip
    """Run :func:`derive_slippage` every ``interval_s`` (at once again while a run was full).

    Until one run found less than ``limit`` fills the whole ledger is scanned; afterwards
    only fills of the last ``lookback`` (an intent later than that is not compared).
    """
    caught_up = False
    while not stopping.is_set():
        eng, n = engine(), 0
        if eng is not None:
            since = datetime.now(UTC) - lookback if caught_up else None
            try:
                n = await asyncio.to_thread(derive_slippage, eng, limit=limit, since=since)
                SLIPPAGE_ROWS.inc(n)
                caught_up = caught_up or n < limit
            except Exception as exc:  # noqa: BLE001 - ledger down: next tick tries again
                JOB_ERRORS.labels("slippage").inc()
                logger.warning("slippage derivation failed error=%r", exc)
        if n < limit:
            await _tick(stopping, interval_s)


async def equity_loop(
    engine: EngineGetter, marks: MarkSource | None, mode: str, stopping: asyncio.Event,
    interval_s: float, on_points: Callable[[list[EquityPoint]], Awaitable[None]] | None = None,
) -> None:  # fmt: skip
    """Run :func:`record_equity` every ``interval_s``; ``on_points`` gets each run's points
    (e.g. to write ``equity:_:latest`` to Redis)."""
    while not stopping.is_set():
        eng = engine()
        if eng is not None:
            try:
                points = await asyncio.to_thread(record_equity, eng, marks, mode)
                EQUITY_ROWS.inc(len(points))
                if on_points is not None and points:
                    await on_points(points)
            except Exception as exc:  # noqa: BLE001 - ledger/Redis down: next tick tries again
                JOB_ERRORS.labels("equity").inc()
                logger.warning("equity recording failed mode=%s error=%r", mode, exc)
        await _tick(stopping, interval_s)


__all__ = [
    "EquityPoint",
    "derive_slippage",
    "equity_loop",
    "export_equity",
    "ingest_intents",
    "init_series",
    "intent_batch_handler",
    "record_equity",
    "slippage_loop",
]

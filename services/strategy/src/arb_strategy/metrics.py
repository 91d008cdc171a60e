"""Prometheus metrics of the strategy (``arb_strategy_*``)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from .risk_guard import RiskGuard

SPREAD = Gauge("arb_strategy_spread_bps", "Best executable net spread (bps)", ["symbol"])
INTENTS = Counter("arb_strategy_intents_total", "Intents published", ["symbol", "action"])
DECISION = Histogram(
    "arb_strategy_decision_seconds",
    "Book frame received to intent published",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
RISK_BLOCKS = Counter(
    "arb_strategy_risk_blocks_total", "Opens refused by the RiskGuard", ["symbol", "kind"]
)
REALIZED_PNL = Gauge("arb_strategy_realized_pnl", "Realized PnL since start (quote)", ["symbol"])
TRADING_ENABLED = Gauge("arb_strategy_trading_enabled", "1 when new entries are allowed")
EXPOSURE = Gauge("arb_strategy_exposure", "Inventory exposure notional (quote)", ["symbol"])
DAILY_LOSS = Gauge("arb_strategy_daily_loss", "Realized loss of the current UTC day (quote)")
DAILY_PNL = Gauge("arb_strategy_daily_pnl", "Realized PnL of the current UTC day (quote)")
TRADES = Counter("arb_strategy_trades_completed_total", "Round trips fully filled", ["symbol"])
# Winrate = won / completed (a zero-PnL round trip is neither won nor lost, as in the stats).
TRADES_WON = Counter("arb_strategy_trades_won_total", "Round trips closed with PnL > 0",
                     ["symbol"])
# The RiskGuard's configured limits, so dashboards and alerts divide by the real ones.
DAILY_LOSS_LIMIT = Gauge("arb_strategy_daily_loss_limit",
                         "RiskGuard daily realized-loss limit (quote, ARB_DAILY_LOSS_LIMIT)")
EXPOSURE_LIMIT = Gauge("arb_strategy_exposure_limit",
                       "RiskGuard exposure cap per symbol (quote notional, ARB_MAX_EXPOSURE*)",
                       ["symbol"])
BAD_MESSAGES = Counter(
    "arb_strategy_bad_messages_total", "Bus messages of an unexpected type or content", ["kind"]
)
for _kind in ("not_a_book", "bad_book", "exec", "control"):  # exported at 0 from the start
    BAD_MESSAGES.labels(_kind)
PUBLISH_ERRORS = Counter(
    "arb_strategy_publish_errors_total", "Intents that could not be published", ["symbol"]
)

# Memory: snapshots, restore + replay, Redis hot state.
SNAPSHOTS_SAVED = Counter(
    "arb_strategy_snapshots_saved_total", "Snapshots saved through the state service", ["reason"]
)
SNAPSHOT_FAILURES = Counter(
    "arb_strategy_snapshot_failures_total", "Snapshot saves that failed (retried at the next)"
)
SNAPSHOT_SECONDS = Histogram(
    "arb_strategy_snapshot_seconds", "Snapshot build + save (request to the state service)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RESTORE_SECONDS = Histogram(
    "arb_strategy_restore_seconds", "Start to live: snapshot load + restore + EXEC replay",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
REPLAYED = Counter("arb_strategy_replayed_events_total", "EXEC events applied while restoring")
EXEC_SEQ = Gauge("arb_strategy_exec_seq", "Last EXEC stream sequence applied")
RESTORED = Gauge("arb_strategy_restored", "1 once state is restored and the strategy is live")
REDIS_ERRORS = Counter("arb_strategy_redis_errors_total", "Redis hot-state writes that failed")


def export_limits(guard: RiskGuard, symbols: Iterable[str]) -> None:
    """Limits as gauges; the per-symbol series of ``symbols`` exist from the start (0 trades)."""
    DAILY_LOSS_LIMIT.set(float(guard.daily_loss_limit))
    for symbol in symbols:
        EXPOSURE_LIMIT.labels(symbol).set(float(guard.cap(symbol)))
        TRADES.labels(symbol)
        TRADES_WON.labels(symbol)

"""strategy settings (``ARB_*`` environment variables).

Mappings are JSON, e.g. ``ARB_ORDER_QTY='{"BTC-USDT": "0.01", "ETH-USDT": "0.2"}'``.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from arb_common.settings import CommonSettings


def _default_qty() -> dict[str, Decimal]:
    return {"BTC-USDT": Decimal("0.01"), "ETH-USDT": Decimal("0.2"), "SOL-USDT": Decimal("5")}


class StrategySettings(CommonSettings):
    http_port: int = Field(default=8082, ge=1, le=65535)
    # Base quantity per round trip, per symbol.
    order_qty: dict[str, Decimal] = Field(default_factory=_default_qty)
    # Open when the best executable net spread (after both taker fees) reaches this.
    min_spread_bps: Decimal = Decimal("5")
    # Close when the reverse executable net spread (the exit cost, after fees) is at least this.
    # Exiting a reverted gap costs roughly both taker fees (~-20 bps at 10 bps each).
    close_spread_bps: Decimal = Decimal("-20")
    max_hold_s: float = Field(default=120.0, gt=0)
    # Pause after each round trip (with the simulator's defaults a symbol would otherwise
    # round-trip every ~10 s; 30 s gives about one per symbol per 40-60 s).
    cooldown_s: float = Field(default=30.0, ge=0)
    # Books older than this (recv_ts vs now) are ignored.
    book_stale_s: float = Field(default=2.0, gt=0)
    # RiskGuard: realized loss per UTC day (quote currency) that blocks new opens.
    daily_loss_limit: Decimal = Field(default=Decimal("100"), gt=0)
    # RiskGuard: per-symbol exposure cap (quote notional); symbols not listed use the default.
    max_exposure: dict[str, Decimal] = Field(default_factory=dict)
    max_exposure_default: Decimal = Field(default=Decimal("5000"), gt=0)
    # Trading enabled at first start (afterwards the last ctl.event.trading wins).
    trading_enabled: bool = True
    # At most one RiskEvent per symbol and kind this often (the metric counts every block).
    risk_event_interval_s: float = Field(default=10.0, ge=0)
    # Snapshots (saved through the state service): this often, after every closed trade, on
    # graceful shutdown and on `arbctl snapshot`.
    snapshot_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    # Background snapshots (periodic, trade_closed) at most this often: closes in a burst
    # share one, each is still covered within this time (manual and shutdown: at once).
    snapshot_min_spacing_s: float = Field(default=1.0, ge=0, le=600)
    # Restore at start: wait this long per attempt for the state service to answer.
    restore_request_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # Redis hot state (guard, cooldowns, heartbeat): flush interval and re-sync check interval.
    hot_flush_s: float = Field(default=0.05, gt=0, le=60)
    hot_check_s: float = Field(default=2.0, gt=0, le=300)

    @model_validator(mode="after")
    def _quantities(self) -> StrategySettings:
        for symbol in self.symbol_list:
            qty = self.order_qty.get(symbol)
            if qty is None or qty <= 0:
                raise ValueError(f"order_qty: no positive quantity for {symbol}")
        if self.close_spread_bps >= self.min_spread_bps:
            raise ValueError("close_spread_bps: must be below min_spread_bps")
        return self

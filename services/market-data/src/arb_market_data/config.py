"""market-data settings (``ARB_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from arb_common.settings import CommonSettings


class MarketDataSettings(CommonSettings):
    http_port: int = Field(default=8081, ge=1, le=65535)
    # REST depth snapshot size used to (re)build a book; Binance allows up to 5000.
    snapshot_limit: int = Field(default=1000, ge=5, le=5000)
    # Levels per side in the published Book.
    book_levels: int = Field(default=20, ge=1, le=1000)
    # A book without an update for this long is stale (gauge + /readyz).
    stale_after_s: float = Field(default=5.0, gt=0)
    # WebSocket reconnect backoff: exponential with full jitter between these bounds.
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    # Snapshot retries while resyncing one symbol.
    snapshot_retry_s: float = Field(default=0.5, gt=0)
    ws_open_timeout_s: float = Field(default=10.0, gt=0)

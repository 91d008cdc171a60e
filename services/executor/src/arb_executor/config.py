"""Executor settings (``ARB_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from arb_common.settings import CommonSettings


class ExecutorSettings(CommonSettings):
    http_port: int = Field(default=8083, ge=1, le=65535)
    # An arbitrage opportunity older than this (intent envelope ts -> now) is dropped:
    # acked with REJECTED order events, reason "stale intent".
    intent_max_age_s: float = Field(default=10.0, gt=0)
    # ccxt request timeout for venue calls (ms on the wire, seconds here).
    venue_timeout_s: float = Field(default=5.0, gt=0)
    # Binance recvWindow sent with signed requests: a request that reaches the venue later
    # than this is refused by the venue, which bounds how long an order can "appear".
    venue_recv_window_ms: int = Field(default=5000, ge=1000, le=60000)
    # How long an UNKNOWN outcome is resolved by querying the client order id before giving
    # up: not found by then -> REJECTED "not found after timeout"; unreachable -> stays
    # UNKNOWN for the reconciler. Keep it > venue_timeout_s + recv window.
    unknown_resolve_s: float = Field(default=12.0, gt=0)
    # Client-side throttle per venue (ccxt enableRateLimit); 0 disables it.
    venue_rate_limit_ms: int = Field(default=0, ge=0)
    # Paper-mode market rules used when the venue's exchangeInfo cannot be loaded.
    paper_lot_step: str = "0.00001"
    paper_min_qty: str = "0.00001"
    paper_min_notional: str = "5"

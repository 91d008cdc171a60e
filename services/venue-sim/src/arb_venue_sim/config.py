"""Settings of the venue simulator, symbol specifications and dev-account credentials.

Every setting is an ``ARB_*`` environment variable (pydantic-settings, see
``arb_common.settings``). The price-model parameters are documented in ``pricing.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from arb_common.money import D
from arb_common.settings import CommonSettings
from arb_common.venues import read_secret


class SimSettings(CommonSettings):
    """``ARB_*`` settings of venue-sim (control API on ``http_port``, venue ``i`` on
    ``sim_base_port + i``)."""

    http_port: int = Field(default=8090, ge=1, le=65535)
    sim_base_port: int = Field(default=8091, ge=1, le=65535)
    # Host put in the advertised rest_url / ws_url ("" = http_host, or 127.0.0.1 for 0.0.0.0).
    sim_advertise_host: str = ""
    sim_seed: int = 42
    # Market tick: each symbol's book on each venue changes this many times per second.
    sim_book_updates_per_s: float = Field(default=15.0, gt=0, le=200)
    # Same thing given as an interval; when set (> 0) it wins over sim_book_updates_per_s.
    sim_tick_interval_ms: int = Field(default=0, ge=0, le=10_000)
    # Visible levels per side (the book keeps at least this many non-empty levels).
    sim_book_depth: int = Field(default=25, ge=5, le=500)
    # Price model (see pricing.py): common random walk + per-venue OU deviation + kicks.
    sim_walk_vol_bps: float = Field(default=2.0, ge=0)
    sim_ou_theta: float = Field(default=0.5, gt=0)
    sim_ou_vol_bps: float = Field(default=3.0, ge=0)
    sim_kick_rate_per_s: float = Field(default=0.25, ge=0)
    sim_kick_min_bps: float = Field(default=30.0, ge=0)
    sim_kick_max_bps: float = Field(default=60.0, ge=0)
    sim_taker_fee: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    sim_maker_fee: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    # "quote": commission always in the quote asset (USDT); "received": in the asset received
    # (base for buys, quote for sells), like Binance without BNB fee payment.
    sim_fee_asset: Literal["quote", "received"] = "quote"
    sim_start_balances: str = Field(
        default="USDT=1000000,BTC=10,ETH=200,SOL=5000",
        pattern=r"^[A-Z0-9]+=[0-9]+(\.[0-9]+)?(,[A-Z0-9]+=[0-9]+(\.[0-9]+)?)*$",
    )
    # A WebSocket client whose outgoing queue grows past this is disconnected (slow consumer).
    sim_ws_queue_max: int = Field(default=5000, ge=10)

    @model_validator(mode="after")
    def _kick_range(self) -> SimSettings:
        if self.sim_kick_max_bps < self.sim_kick_min_bps:
            raise ValueError("sim_kick_max_bps: must be >= sim_kick_min_bps")
        return self

    @property
    def tick_interval_s(self) -> float:
        if self.sim_tick_interval_ms > 0:
            return self.sim_tick_interval_ms / 1000.0
        return 1.0 / self.sim_book_updates_per_s

    @property
    def advertise_host(self) -> str:
        if self.sim_advertise_host:
            return self.sim_advertise_host
        return "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host

    def start_balances(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for item in self.sim_start_balances.split(","):
            asset, amount = item.split("=", 1)
            out[asset] = D(amount)
        return out


@dataclass(frozen=True)
class SymbolSpec:
    """One tradable symbol: our name, Binance wire name, filters and book shape."""

    symbol: str  # BTC-USDT
    base: str
    quote: str
    start_price: Decimal
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    max_notional: Decimal
    level_step: Decimal  # grid between price levels (a multiple of tick_size)
    level_qty: Decimal  # typical quantity of one level

    @property
    def wire(self) -> str:
        return self.base + self.quote


_KNOWN: dict[str, tuple[str, str, str, str, str, str]] = {
    # symbol: start price, tick, step (= min qty), max qty, level step, typical level qty
    "BTC-USDT": ("60000", "0.01", "0.00001", "9000", "2.00", "0.4"),
    "ETH-USDT": ("3000", "0.01", "0.0001", "9000", "0.10", "6"),
    "SOL-USDT": ("150", "0.01", "0.001", "90000", "0.01", "100"),
}


def symbol_spec(symbol: str) -> SymbolSpec:
    """Spec of a known symbol; unknown ones get a generic ~100-quote-unit market."""
    base, quote = symbol.split("-", 1)
    price, tick, step, max_qty, level_step, level_qty = _KNOWN.get(
        symbol, ("100", "0.01", "0.001", "900000", "0.01", "50")
    )
    return SymbolSpec(
        symbol=symbol, base=base, quote=quote, start_price=D(price), tick_size=D(tick),
        step_size=D(step), min_qty=D(step), max_qty=D(max_qty), min_notional=D("5"),
        max_notional=D("9000000"), level_step=D(level_step), level_qty=D(level_qty),
    )


@dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(api_key={self.api_key[:8]}..., api_secret=***)"


def venue_credentials(venue: str, seed: int) -> Credentials:
    """Dev account keys: ``ARB_VENUE_SIM_<ID>_API_KEY`` / ``_API_SECRET`` (env or secrets dir),
    else derived deterministically from the seed (64 hex chars each, like Binance HMAC keys)."""
    up = venue.upper()
    key = read_secret(f"ARB_VENUE_SIM_{up}_API_KEY")
    secret = read_secret(f"ARB_VENUE_SIM_{up}_API_SECRET")
    if not key:
        key = hashlib.sha256(f"arb-venue-sim:{seed}:{venue}:key".encode()).hexdigest()
    if not secret:
        secret = hashlib.sha256(f"arb-venue-sim:{seed}:{venue}:secret".encode()).hexdigest()
    return Credentials(api_key=key, api_secret=secret)

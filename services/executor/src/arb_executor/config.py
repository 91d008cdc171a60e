"""Executor settings (``ARB_*`` environment variables)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator, model_validator

from arb_common.money import D
from arb_common.settings import CommonSettings, Mode

ALL_VENUES = "*"


def parse_paper_balances(text: str) -> dict[str, dict[str, Decimal]]:
    """``ARB_PAPER_BALANCES`` -> venue (``*`` = every venue) -> asset -> amount.

    Accepted: ``USDT=1000000,BTC=10`` or JSON ``{"USDT": "1000000", "BTC": 10}`` (every venue),
    or JSON per venue ``{"alpha": {"USDT": "5000"}, "*": {"USDT": "1000000", "BTC": "10"}}``.
    Raises ``ValueError`` saying what is wrong.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            raw = json.loads(text, parse_float=str, parse_int=str)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
        if raw and all(isinstance(v, dict) for v in raw.values()):
            return {venue: _amounts(items.items()) for venue, items in raw.items()}
        return {ALL_VENUES: _amounts(raw.items())}
    pairs: list[tuple[str, object]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        asset, sep, amount = item.partition("=")
        if not sep:
            raise ValueError(f"expected ASSET=amount, got {item!r}")
        pairs.append((asset.strip(), amount.strip()))
    return {ALL_VENUES: _amounts(pairs)}


def _amounts(items: object) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for asset, amount in items:  # type: ignore[attr-defined]
        if not isinstance(asset, str) or not asset.isalnum() or not asset.isupper():
            raise ValueError(f"bad asset name {asset!r} (upper-case letters and digits)")
        try:
            value = D(str(amount))
        except ValueError:
            raise ValueError(f"{asset}: not a decimal amount: {amount!r}") from None
        if value < 0:
            raise ValueError(f"{asset}: amount must be >= 0, got {amount}")
        out[asset] = value
    return out


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
    # Hedging uneven legs (arb_executor.hedge): which venue evens them out — "complete"
    # (the short leg's venue), "unwind" (the long leg's venue) or "cheapest" (by the books,
    # after fees); within this time limit and number of hedge orders per intent.
    hedge_policy: Literal["complete", "unwind", "cheapest"] = "cheapest"
    hedge_timeout_s: float = Field(default=10.0, gt=0, le=300)
    hedge_max_attempts: int = Field(default=4, ge=1, le=20)
    # Free balances for the pre-send check are re-read from the venues this often (and
    # after every intent that filled).
    balance_refresh_s: float = Field(default=5.0, gt=0)
    # JetStream redelivers an intent whose handler went silent (process killed) after this;
    # a running handler keeps it alive (in-progress every third of it).
    intent_ack_wait_s: float = Field(default=30.0, ge=1, le=600)

    # Paper / shadow fill model (arb_executor.paper). Fees used when the venue's own are not
    # known (discovery failed); the venue's taker fee is charged on every paper fill.
    paper_taker_fee: str = "0.001"
    paper_maker_fee: str = "0.001"
    # Simulated order round trip: the fill walks the book as it is after this long.
    paper_latency_ms: int = Field(default=0, ge=0, le=60_000)
    # A paper order on a book received longer ago than this is rejected ("no book").
    paper_book_stale_s: float = Field(default=5.0, gt=0, le=3600)
    # Start balances of each paper venue: "ASSET=amount,..." or JSON (see
    # parse_paper_balances; per venue with {"alpha": {...}, "*": {...}}). In paper mode every
    # configured symbol's base and quote asset must be given (0 is fine).
    paper_balances: str = "USDT=1000000,BTC=10,ETH=200,SOL=5000"

    @field_validator("paper_lot_step", "paper_min_qty", "paper_min_notional",
                     "paper_taker_fee", "paper_maker_fee")
    @classmethod
    def _decimal(cls, value: str) -> str:
        try:
            number = D(value)
        except ValueError:
            raise ValueError(f"not a decimal number: {value!r}") from None
        if number < 0:
            raise ValueError("must be >= 0")
        return value

    @field_validator("paper_taker_fee", "paper_maker_fee")
    @classmethod
    def _fee(cls, value: str) -> str:
        if D(value) >= Decimal("0.1"):
            raise ValueError("a fee rate, e.g. 0.001 for 10 bps; must be < 0.1")
        return value

    @field_validator("paper_balances")
    @classmethod
    def _balances(cls, value: str) -> str:
        parse_paper_balances(value)
        return value

    @model_validator(mode="after")
    def _paper_assets(self) -> ExecutorSettings:
        if self.mode is not Mode.paper:
            return self
        for venue in self.venue_list:
            have = self.paper_balances_for(venue)
            for symbol in self.symbol_list:
                for asset in symbol.split("-"):
                    if asset not in have:
                        raise ValueError(f"paper_balances: no {asset} balance for venue "
                                         f"{venue} (symbol {symbol}); add {asset}=<amount>")
        return self

    def paper_balances_for(self, venue: str) -> dict[str, Decimal]:
        """Start balances of one paper venue (its own entry, else the ``*`` one, else none)."""
        table = parse_paper_balances(self.paper_balances)
        return dict(table.get(venue, table.get(ALL_VENUES, {})))

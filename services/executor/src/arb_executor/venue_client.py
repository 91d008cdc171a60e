"""Binance-spot trading adapter on ``ccxt.async_support`` (also used by the reconciler).

The ONE place that knows how to point ccxt at a venue (shared/protocols/ccxt-binance-local.md
§1a): all 22 REST url sections overridden (P1), no sapi/fapi/dapi calls at load (P2), market
buys by base quantity, and every ccxt error classified into our hierarchy:

- rejected for sure (InsufficientFunds, InvalidOrder, BadRequest, ...) -> :class:`OrderRejected`
- unknown outcome (NetworkError, RequestTimeout, ExchangeNotAvailable, OperationFailed (P10),
  anything unexpected, a malformed 200 body (P5)) -> ``UnknownOutcome``: resolve by coid
- "Duplicate order sent." -> :class:`DuplicateOrder`: the coid is already open, query it.
- 429 / 418 (DDoSProtection, RateLimitExceeded) -> ``RateLimited``: not acted on; the call is
  retried here with the same client order id after the venue's ``Retry-After`` (capped) plus
  jitter, a bounded number of times, then surfaces as ``RateLimited``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
from prometheus_client import Counter, Histogram

from arb_common.errors import ArbError, RateLimited, TemporaryError, UnknownOutcome
from arb_common.messages import OrderStatus, Side
from arb_common.money import D, to_str
from arb_common.venues import VenueConfig

logger = logging.getLogger(__name__)

_SECTIONS = {
    "public": "/api/v3", "private": "/api/v3", "v1": "/api/v1",
    "sapi": "/sapi/v1", "sapiV2": "/sapi/v2", "sapiV3": "/sapi/v3", "sapiV4": "/sapi/v4",
    "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "dapiPublic": "/dapi/v1", "dapiPrivate": "/dapi/v1", "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1", "eapiPrivate": "/eapi/v1",
    "papi": "/papi/v1", "papiV2": "/papi/v2",
}

# Binance raw order status -> ours (NEW on the venue means accepted = ACKED for us).
_STATUS: dict[str, OrderStatus] = {
    "NEW": "ACKED",
    "PENDING_NEW": "ACKED",
    "PARTIALLY_FILLED": "PARTIALLY_FILLED",
    "FILLED": "FILLED",
    "CANCELED": "CANCELED",
    "PENDING_CANCEL": "PARTIALLY_FILLED",
    "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED",
    "EXPIRED_IN_MATCH": "EXPIRED",
}
_UNIFIED: dict[str, OrderStatus] = {
    "closed": "FILLED", "canceled": "CANCELED", "expired": "EXPIRED", "rejected": "REJECTED",
}


def ccxt_config(
    venue: VenueConfig,
    *,
    timeout_s: float = 5.0,
    rate_limit_ms: int = 0,
    recv_window_ms: int = 5000,
) -> dict[str, Any]:
    """The constructor dict for ``ccxt.binance`` that keeps every call on ``venue.rest_url``."""
    base = venue.rest_url.rstrip("/")
    cfg: dict[str, Any] = {
        "apiKey": venue.api_key,
        "secret": venue.api_secret,
        "timeout": int(timeout_s * 1000),
        "enableRateLimit": rate_limit_ms > 0,
        "urls": {"api": {key: base + path for key, path in _SECTIONS.items()}},
        "options": {
            "defaultType": "spot",
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchMarkets": {"types": ["spot"]},
            "adjustForTimeDifference": False,
            "createOrder": {"quoteOrderQty": False},
            "fetchOpenOrders": {"warnWithoutSymbol": False},
            "recvWindow": recv_window_ms,
        },
    }
    if rate_limit_ms > 0:
        cfg["rateLimit"] = rate_limit_ms
    return cfg


def ccxt_symbol(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTC/USDT``."""
    return symbol.replace("-", "/")


def our_symbol(ccxt_sym: str) -> str:
    return ccxt_sym.replace("/", "-")


class OrderRejected(ArbError):
    """The venue refused the order for sure (nothing was placed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DuplicateOrder(ArbError):
    """The client order id is already in use on the venue: query it instead of sending."""


@dataclass(frozen=True)
class MarketRules:
    symbol: str
    lot_step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    base: str
    quote: str


@dataclass(frozen=True)
class VenueFill:
    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    ts_ms: int = 0


@dataclass(frozen=True)
class VenueOrder:
    client_order_id: str
    status: OrderStatus
    quantity: Decimal
    filled: Decimal
    venue_order_id: str | None = None
    avg_price: Decimal | None = None
    fills: list[VenueFill] = field(default_factory=list)
    ts_ms: int = 0
    side: Side | None = None
    symbol: str = ""


def _dec(value: Any, default: str = "0") -> Decimal:
    """Exchange number (string preferred; ccxt may hand floats) -> Decimal."""
    if value is None or value == "":
        return D(default)
    if isinstance(value, float):
        return D(repr(value))
    return D(str(value)) if not isinstance(value, Decimal) else value


def classify(exc: BaseException) -> ArbError:
    """Map a ccxt (or transport) exception to our error hierarchy."""
    text = str(exc)
    if "Duplicate order" in text:
        return DuplicateOrder(text)
    if isinstance(exc, ccxt_async.OrderNotFound):
        return UnknownOutcome(f"order not found: {text}")
    if isinstance(exc, (ccxt_async.DDoSProtection, ccxt_async.RateLimitExceeded)):
        # 429 / 418 (-1003): Binance refuses the request before acting on it, so the same
        # request (same client order id) may be sent again after the pause it asks for.
        return RateLimited(f"{type(exc).__name__}: {_short(text)}")
    sure = (
        ccxt_async.InsufficientFunds,
        ccxt_async.InvalidOrder,
        ccxt_async.BadRequest,
        ccxt_async.BadSymbol,
        ccxt_async.AuthenticationError,
        ccxt_async.PermissionDenied,
        ccxt_async.AccountSuspended,
    )
    if isinstance(exc, sure) and not isinstance(exc, ccxt_async.NetworkError):
        return OrderRejected(f"{type(exc).__name__}: {_short(text)}")
    # NetworkError (RequestTimeout, ExchangeNotAvailable, DDoSProtection, InvalidNonce),
    # OperationFailed (503 -1001, P10), any other ExchangeError or transport failure:
    # we cannot know whether the venue acted on the request.
    return UnknownOutcome(f"{type(exc).__name__}: {_short(text)}")


RATE_LIMIT_RETRIES = 3
RATE_LIMIT_MAX_WAIT_S = 2.0
RATE_LIMITED = Counter("arb_executor_rate_limited_total",
                       "Venue answers asking us to slow down (429/418), retried", ["venue"])
ORDER_ACK = Histogram(
    "arb_executor_order_ack_seconds",
    "Order request sent to the venue's answer: an order or a refusal (each attempt)",
    ["venue"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip


class _NotFound(Exception):
    pass


def _retry_after(ex: Any) -> float:
    headers = getattr(ex, "last_response_headers", None) or {}
    for key in ("Retry-After", "retry-after"):
        value = headers.get(key) if hasattr(headers, "get") else None
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                break
    return 0.5


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


def parse_rules(symbol: str, market: dict[str, Any]) -> MarketRules:
    """Lot step / min qty / min notional from the raw exchangeInfo filters (strings)."""
    filters = {f.get("filterType"): f for f in market.get("info", {}).get("filters", [])}
    lot = filters.get("LOT_SIZE", {})
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    step = _dec(lot.get("stepSize"), "0")
    if step == 0 and market.get("precision", {}).get("amount") is not None:
        step = _dec(market["precision"]["amount"])
    return MarketRules(
        symbol=symbol,
        lot_step=step,
        min_qty=_dec(lot.get("minQty"), "0"),
        min_notional=_dec(notional.get("minNotional", notional.get("notional")), "0"),
        base=str(market.get("base", symbol.split("-")[0])),
        quote=str(market.get("quote", symbol.split("-")[-1])),
    )


def parse_order(order: dict[str, Any], symbol: str) -> VenueOrder:
    """A ccxt order dict (with the raw Binance body in ``info``) -> :class:`VenueOrder`."""
    info = order.get("info") or {}
    raw = str(info.get("status") or "")
    status = _STATUS.get(raw)
    if status is None:
        unified = order.get("status")
        filled0 = _dec(order.get("filled"))
        status = _UNIFIED.get(str(unified)) or ("PARTIALLY_FILLED" if filled0 > 0 else "ACKED")
    coid = order.get("clientOrderId") or info.get("clientOrderId")
    if order.get("id") is None or coid is None or not raw:
        raise UnknownOutcome(f"malformed order response: {str(info)[:200]}")
    quantity = _dec(info.get("origQty") or order.get("amount"))
    filled = _dec(info.get("executedQty") or order.get("filled"))
    cost = _dec(info.get("cummulativeQuoteQty") or order.get("cost"))
    ts = int(order.get("timestamp") or order.get("lastUpdateTimestamp") or 0)
    fills = [
        VenueFill(
            trade_id=str(f["tradeId"]),
            quantity=_dec(f.get("qty")),
            price=_dec(f.get("price")),
            fee=_dec(f.get("commission")),
            fee_asset=str(f.get("commissionAsset") or ""),
            ts_ms=ts,
        )
        for f in info.get("fills") or []
    ]
    side = str(order.get("side") or info.get("side") or "").lower()
    return VenueOrder(
        client_order_id=str(coid),
        status=status,
        quantity=quantity,
        filled=filled,
        venue_order_id=str(order["id"]),
        avg_price=(cost / filled) if filled > 0 and cost > 0 else None,
        fills=fills,
        ts_ms=ts,
        side="buy" if side == "buy" else "sell" if side == "sell" else None,
        symbol=symbol,
    )


def parse_trade(trade: dict[str, Any]) -> VenueFill:
    """A ccxt myTrades entry -> :class:`VenueFill` (raw strings from ``info``)."""
    info = trade.get("info") or {}
    return VenueFill(
        trade_id=str(info.get("id", trade.get("id"))),
        quantity=_dec(info.get("qty", trade.get("amount"))),
        price=_dec(info.get("price", trade.get("price"))),
        fee=_dec(info.get("commission")),
        fee_asset=str(info.get("commissionAsset") or ""),
        ts_ms=int(info.get("time") or trade.get("timestamp") or 0),
    )


class VenueClient:
    """One venue account over ccxt. ``submit``/``query`` raise classified errors."""

    def __init__(self, venue: VenueConfig, *, timeout_s: float = 5.0, rate_limit_ms: int = 0,
                 recv_window_ms: int = 5000) -> None:
        self.venue = venue.id
        self.config = venue
        self.ex = ccxt_async.binance(ccxt_config(
            venue, timeout_s=timeout_s, rate_limit_ms=rate_limit_ms,
            recv_window_ms=recv_window_ms))
        self._rules: dict[str, MarketRules] = {}
        self._market_ids: dict[str, str] = {}  # BTC-USDT -> BTCUSDT (the venue's own id)
        self.markets_loaded = False
        self._ack = ORDER_ACK.labels(self.venue)

    async def load_markets(self) -> None:
        markets = await self.ex.load_markets()
        self._rules = {
            our_symbol(sym): parse_rules(our_symbol(sym), m) for sym, m in markets.items()
        }
        self._market_ids = {our_symbol(sym): str(m["id"]) for sym, m in markets.items()}
        self.markets_loaded = True
        logger.info("markets loaded venue=%s symbols=%d", self.venue, len(self._rules))

    @property
    def symbols(self) -> list[str]:
        return sorted(self._rules)

    def rules(self, symbol: str) -> MarketRules:
        if not self.markets_loaded:
            raise TemporaryError(f"markets of {self.venue} not loaded yet")
        try:
            return self._rules[symbol]
        except KeyError:
            raise OrderRejected(f"symbol {symbol} not listed on {self.venue}") from None

    async def close(self) -> None:
        await self.ex.close()

    async def submit(self, symbol: str, side: Side, quantity: Decimal, coid: str) -> VenueOrder:
        """Send a MARKET order; return the venue's answer or raise a classified error.

        Through ccxt's signed endpoint method (``POST /api/v3/order``: same signing, same
        transport, same error mapping) rather than the unified ``create_order``, which would
        re-check precision we already applied (lot step, :func:`plan_legs`) and build a unified
        order that :func:`parse_order` does not use: ~0.5 ms of CPU and latency per order.
        """
        market_id = self._market_ids.get(symbol)
        if market_id is None:  # nothing was sent
            if not self.markets_loaded:
                raise TemporaryError(f"markets of {self.venue} not loaded yet")
            raise OrderRejected(f"symbol {symbol} not listed on {self.venue}")
        params = {"symbol": market_id, "side": side.upper(), "type": "MARKET",
                  "quantity": to_str(quantity), "newClientOrderId": coid,
                  "newOrderRespType": "FULL"}
        raw = await self._paced(lambda: self._timed_post(params))
        if not isinstance(raw, dict):
            raise UnknownOutcome(f"malformed order response: {str(raw)[:200]}")
        return parse_order({"info": raw, "id": raw.get("orderId"),
                            "clientOrderId": raw.get("clientOrderId"),
                            "timestamp": raw.get("transactTime"), "side": raw.get("side")},
                           symbol)

    async def _timed_post(self, params: dict[str, str]) -> Any:
        """``POST /api/v3/order``, its round trip observed in ``arb_executor_order_ack_seconds``
        when the venue answered it: with the order, or refusing it (``ExchangeError``: 4xx
        with the venue's code). Not on a timeout, a lost connection, a 5xx or a 429 (ccxt's
        ``OperationFailed``: no answer to the order, or one asking to come back later)."""
        started = time.perf_counter()
        try:
            raw = await self.ex.private_post_order(params)
        except ccxt_async.ExchangeError:
            self._ack.observe(time.perf_counter() - started)
            raise
        self._ack.observe(time.perf_counter() - started)
        return raw

    async def query(self, symbol: str, coid: str) -> VenueOrder | None:
        """The order with this client order id, with its fills; None if the venue has none."""
        try:
            order = await self._paced(lambda: self.ex.fetch_order(
                None, ccxt_symbol(symbol), params={"clientOrderId": coid}), not_found=True)
        except _NotFound:
            return None
        parsed = parse_order(order, symbol)
        if parsed.filled > 0 and not parsed.fills:
            parsed = await self._with_trades(parsed)
        return parsed

    async def _paced(self, call: Callable[[], Awaitable[Any]], *,
                     not_found: bool = False) -> Any:
        """``call()`` with its errors classified; a rate-limit answer (not acted on by the
        venue) is retried after ``Retry-After`` (at most ``RATE_LIMIT_MAX_WAIT_S``) with
        jitter, up to ``RATE_LIMIT_RETRIES`` times."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                return await call()
            except ccxt_async.OrderNotFound:
                if not_found:
                    raise _NotFound() from None
                raise
            except Exception as exc:  # noqa: BLE001 - classified right here
                err = classify(exc)
                if not isinstance(err, RateLimited) or attempt == RATE_LIMIT_RETRIES:
                    raise err from exc
                RATE_LIMITED.labels(self.venue).inc()
                wait = min(_retry_after(self.ex), RATE_LIMIT_MAX_WAIT_S)
                wait = wait * (1 + random.random() * 0.25) + random.random() * 0.05 * 2**attempt
                logger.warning("rate limited venue=%s retry_in_s=%.2f attempt=%d", self.venue,
                               wait, attempt + 1)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _with_trades(self, order: VenueOrder) -> VenueOrder:
        try:
            trades = await self.ex.fetch_my_trades(
                ccxt_symbol(order.symbol), params={"orderId": order.venue_order_id})
        except Exception as exc:  # noqa: BLE001
            raise classify(exc) from exc
        fills = [parse_trade(t) for t in trades
                 if str((t.get("info") or {}).get("orderId")) == str(order.venue_order_id)]
        return VenueOrder(**{**order.__dict__, "fills": fills})

    async def open_orders(self) -> list[VenueOrder]:
        """Every open order on the account, all symbols (reconciler)."""
        try:
            orders = await self.ex.fetch_open_orders()
        except Exception as exc:  # noqa: BLE001
            raise classify(exc) from exc
        return [parse_order(o, our_symbol(str(o.get("symbol") or ""))) for o in orders]

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """asset -> (free, locked), from the raw account body."""
        try:
            bal = await self.ex.fetch_balance()
        except Exception as exc:  # noqa: BLE001
            raise classify(exc) from exc
        out: dict[str, tuple[Decimal, Decimal]] = {}
        for b in (bal.get("info") or {}).get("balances") or []:
            out[str(b["asset"])] = (_dec(b.get("free")), _dec(b.get("locked")))
        return out

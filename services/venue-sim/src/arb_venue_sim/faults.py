"""Fault injection per venue, and the ASGI middleware that applies the HTTP faults.

Kinds (``POST /control/venues/{venue}/faults`` with ``{"kind", "value", "duration_s"}`` and,
for ``reject_orders`` only, ``"reason"``; ``duration_s`` absent or null = until ``DELETE``;
one fault per kind, a new POST of a kind replaces it):

* ``order_latency_ms`` (value: milliseconds, required): ``POST`` / ``DELETE /api/v3/order``
  are processed at once but answered ``value`` ms late (a client timeout then leaves an
  *unknown outcome*: the order exists and may be filled).
* ``lose_order_responses`` (value: probability, default 1): ``POST /api/v3/order`` is
  executed, then the TCP connection is closed without an answer.
* ``reject_orders`` (value: probability, default 1; ``reason``, default ``fault``): new
  orders are rejected with HTTP 400 and the venue's ``{"code", "msg"}`` for that reason
  (table ``REJECT_REASONS``; recorded as REJECTED, nothing executed):
  ``fault`` -2010 "Order rejected by the venue (simulated fault).",
  ``insufficient_balance`` -2010 "Account has insufficient balance for requested action.",
  ``duplicate`` -2010 "Duplicate order sent.", ``lot_size`` -1013 "Filter failure: LOT_SIZE",
  ``notional`` -1013 "Filter failure: NOTIONAL", ``price_filter`` -1013
  "Filter failure: PRICE_FILTER", ``unknown_symbol`` -1121 "Invalid symbol.".
  (The same answers also come for real from the engine: balance, filters, duplicate open
  client id, unknown symbol.)
* ``partial_fill`` (value: fraction, 0 < v < 1, default 0.5): a MARKET order fills only
  ``value`` of its ``quantity`` (rounded down to the LOT_SIZE step, at least one step and at
  most quantity - one step; a one-step order fills nothing) or of its ``quoteOrderQty``; the
  rest expires: status ``EXPIRED``, ``executedQty < origQty``, as Binance answers a market
  order short of liquidity. Fills, myTrades, the order query and balances agree.
* ``rate_limit`` (value: probability, default 1): every REST call answers HTTP 429
  ``{"code": -1003, "msg": "Too much request weight used; current limit is 6000 request
  weight per 1 MINUTE. ..."}`` with ``Retry-After`` (seconds: the fault's remaining duration
  rounded up, 1 if it has none); nothing is executed.
* ``ip_ban``: every REST call answers HTTP 418 ``{"code": -1003, "msg": "Way too much request
  weight used; IP banned until <ms>. ..."}`` with ``Retry-After`` (remaining duration, 120 s
  if none); nothing is executed.
* ``weight_limit`` (value: request weight per minute, required, >= 1): enforces the venue's
  real one-minute weight counter (every ``/api/`` answer carries ``X-MBX-USED-WEIGHT`` and
  ``X-MBX-USED-WEIGHT-1M`` whether or not this is active): a call that takes it over
  ``value`` answers 429 -1003 with ``Retry-After`` = seconds to the next minute.
* ``http_5xx`` (probability, default 1): every REST call answers ``503``
  ``Service Unavailable`` (text/plain); nothing is executed. With ``duration_s``: a burst.
* ``drop_ws``: closes every WebSocket of the venue and refuses new ones while active.
* ``ws_gap`` (probability, default 1): a 100 ms depth flush is dropped, so ``@depth@100ms``
  clients see ``U > previous u + 1`` and must resync.

REST faults are checked in this order: ``ip_ban``, ``rate_limit``, ``weight_limit``,
``http_5xx``, then the order faults.
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from arb_common.clock import SYSTEM_CLOCK, Clock

from .matching import INSUFFICIENT
from .metrics import FAULTS_ACTIVE, REJECTS
from .orders import BinanceError
from .ratelimit import (
    BAN_MSG,
    RATE_LIMIT_MSG,
    WEIGHT_LIMIT_1M,
    WeightCounter,
    error_body,
    weight_of,
)

logger = logging.getLogger(__name__)

KINDS = ("order_latency_ms", "lose_order_responses", "reject_orders", "http_5xx", "drop_ws",
         "ws_gap", "partial_fill", "rate_limit", "ip_ban", "weight_limit")
PROBABILITY_KINDS = ("lose_order_responses", "reject_orders", "http_5xx", "ws_gap",
                     "rate_limit")
REJECT_REASONS: dict[str, tuple[int, str]] = {
    "fault": (-2010, "Order rejected by the venue (simulated fault)."),
    "insufficient_balance": (-2010, INSUFFICIENT),
    "duplicate": (-2010, "Duplicate order sent."),
    "lot_size": (-1013, "Filter failure: LOT_SIZE"),
    "notional": (-1013, "Filter failure: NOTIONAL"),
    "price_filter": (-1013, "Filter failure: PRICE_FILTER"),
    "unknown_symbol": (-1121, "Invalid symbol."),
}
DEFAULT_PARTIAL_FILL = 0.5
DEFAULT_BAN_S = 120

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Fault:
    kind: str
    value: float | None
    duration_s: float | None
    started_ns: int
    expires_ns: int | None
    reason: str | None = None  # reject_orders only

    def remaining_s(self, now_ns: int) -> float | None:
        return None if self.expires_ns is None else max(0.0, (self.expires_ns - now_ns) / 1e9)

    def retry_after_s(self, now_ns: int, default: int) -> int:
        left = self.remaining_s(now_ns)
        return default if left is None else max(1, math.ceil(left))

    def to_json(self, now_ns: int) -> dict[str, Any]:
        left = self.remaining_s(now_ns)
        out = {"kind": self.kind, "value": self.value, "duration_s": self.duration_s,
               "remaining_s": None if left is None else round(left, 3)}
        if self.kind == "reject_orders":
            out["reason"] = self.reason or "fault"
        return out

    def reject_error(self) -> BinanceError:
        """The answer of a ``reject_orders`` fault."""
        reason = self.reason or "fault"
        code, msg = REJECT_REASONS[reason]
        return BinanceError(code, msg, reason="fault_reject" if reason == "fault"
                            else f"fault_{reason}")


class Faults:
    """Active faults of one venue; expired ones disappear on the next read."""

    def __init__(self, venue: str, clock: Clock = SYSTEM_CLOCK, seed: int = 0) -> None:
        self.venue = venue
        self.clock = clock
        self._faults: dict[str, Fault] = {}
        self._rng = random.Random(f"{seed}:faults:{venue}")
        self.on_change: list[Callable[[str], None]] = []
        self.weight = WeightCounter()

    def add(self, kind: str, value: float | None, duration_s: float | None,
            reason: str | None = None) -> Fault:
        _validate(kind, value, duration_s, reason)
        now = self.clock.monotonic_ns()
        expires = None if duration_s is None else now + int(duration_s * 1e9)
        fault = Fault(kind, value, duration_s, now, expires, reason)
        self._faults[kind] = fault
        FAULTS_ACTIVE.labels(self.venue, kind).set(1)
        logger.warning("fault injected venue=%s kind=%s value=%s duration_s=%s reason=%s",
                       self.venue, kind, value, duration_s, reason)
        for fn in self.on_change:
            fn(kind)
        return fault

    def clear(self) -> list[str]:
        kinds = list(self._faults)
        self._faults.clear()
        for kind in kinds:
            FAULTS_ACTIVE.labels(self.venue, kind).set(0)
        logger.warning("faults cleared venue=%s kinds=%s", self.venue, kinds)
        return kinds

    def get(self, kind: str) -> Fault | None:
        fault = self._faults.get(kind)
        if fault is not None and fault.expires_ns is not None \
                and self.clock.monotonic_ns() >= fault.expires_ns:
            del self._faults[kind]
            FAULTS_ACTIVE.labels(self.venue, kind).set(0)
            logger.warning("fault expired venue=%s kind=%s", self.venue, kind)
            return None
        return fault

    def active(self) -> list[Fault]:
        return [f for k in list(self._faults) if (f := self.get(k)) is not None]

    def fires(self, kind: str) -> bool:
        """True when ``kind`` is active and its probability (value, default 1) comes up."""
        fault = self.get(kind)
        if fault is None:
            return False
        if kind in PROBABILITY_KINDS and fault.value is not None:
            return self._rng.random() < fault.value
        return True

    def partial_fill_ratio(self) -> Decimal | None:
        """The fraction a MARKET order fills while ``partial_fill`` is active."""
        fault = self.get("partial_fill")
        if fault is None:
            return None
        return Decimal(str(fault.value if fault.value is not None else DEFAULT_PARTIAL_FILL))

    def to_json(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic_ns()
        return [f.to_json(now) for f in self.active()]


def _validate(kind: str, value: float | None, duration_s: float | None,
              reason: str | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}")
    if kind == "order_latency_ms" and (value is None or value < 0):
        raise ValueError("value: order_latency_ms needs a value >= 0 (milliseconds)")
    if kind in PROBABILITY_KINDS and value is not None and not 0 <= value <= 1:
        raise ValueError(f"value: {kind} takes a probability between 0 and 1")
    if kind == "partial_fill" and value is not None and not 0 < value < 1:
        raise ValueError("value: partial_fill takes a fraction strictly between 0 and 1")
    if kind == "weight_limit" and (value is None or value < 1):
        raise ValueError("value: weight_limit needs a request weight per minute >= 1")
    if reason is not None:
        if kind != "reject_orders":
            raise ValueError("reason: only reject_orders takes a reason")
        if reason not in REJECT_REASONS:
            raise ValueError(f"reason: must be one of {', '.join(REJECT_REASONS)}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError("duration_s: must be > 0 (omit it for 'until deleted')")


class ResponseLost(ConnectionResetError):
    """Raised (in-process transports only) where a real server drops the connection."""


class FaultMiddleware:
    """Outermost ASGI wrapper of a venue app: counts request weight and applies the REST
    faults (ban, rate limit, weight limit, http_5xx, order latency, lost responses). Sits
    outside Starlette so that ``send`` is the server's own callable and the TCP connection
    can be cut without an answer."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        raw_send = send  # the server's own callable (holds the transport)
        if path.startswith("/api/"):
            used = self.faults.weight.add(weight_of(method, path, scope.get("query_string", b"")),
                                          self.faults.clock.now_ms())
            send = _with_weight(send, used)
            if await self._refused(send, used):
                return
        is_order = path == "/api/v3/order" and method in ("POST", "DELETE")
        lose = is_order and method == "POST" and self.faults.fires("lose_order_responses")
        latency = self.faults.get("order_latency_ms") if is_order else None
        if not lose and latency is None:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)  # the order is executed either way
        if lose:
            REJECTS.labels(self.faults.venue, "fault_lost_response").inc()
            logger.warning("dropping order response venue=%s", self.faults.venue)
            await _drop_connection(raw_send)
            return
        if latency is not None and latency.value:
            await asyncio.sleep(latency.value / 1000.0)
        for message in held:
            await send(message)

    async def _refused(self, send: Send, used: int) -> bool:
        """Answer a REST call that a fault refuses (ban, rate limit, weight, 5xx)."""
        faults, now_ns = self.faults, self.faults.clock.monotonic_ns()
        if (ban := faults.get("ip_ban")) is not None:
            retry = ban.retry_after_s(now_ns, DEFAULT_BAN_S)
            until = faults.clock.now_ms() + retry * 1000
            REJECTS.labels(faults.venue, "fault_ip_ban").inc()
            await _json(send, 418, error_body(-1003, BAN_MSG.format(until=until)), retry)
            return True
        limit = faults.get("weight_limit")
        fault = faults.get("rate_limit")
        if fault is not None and faults.fires("rate_limit"):
            REJECTS.labels(faults.venue, "fault_rate_limit").inc()
            await _json(send, 429, error_body(-1003, RATE_LIMIT_MSG.format(
                limit=WEIGHT_LIMIT_1M if limit is None else int(limit.value or 0))),
                fault.retry_after_s(now_ns, 1))
            return True
        if limit is not None and used > (limit.value or 0):
            REJECTS.labels(faults.venue, "weight_limit").inc()
            await _json(send, 429, error_body(-1003, RATE_LIMIT_MSG.format(
                limit=int(limit.value or 0))),
                WeightCounter.seconds_to_reset(faults.clock.now_ms()))
            return True
        if faults.fires("http_5xx"):
            REJECTS.labels(faults.venue, "fault_http_5xx").inc()
            await _plain(send, 503, b"Service Unavailable")
            return True
        return False


def _with_weight(send: Send, used: int) -> Send:
    """``send`` adding the used-weight headers to the response start."""
    value = str(used).encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [(b"x-mbx-used-weight", value), (b"x-mbx-used-weight-1m", value)]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _json(send: Send, status: int, body: bytes, retry_after_s: int) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json;charset=UTF-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(retry_after_s).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(send: Send) -> None:
    """Abort the TCP connection under a uvicorn request (its ``send`` is a bound method of
    the request cycle, which holds the transport)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ResponseLost("simulated lost response")
    transport.abort()
    await asyncio.sleep(0)

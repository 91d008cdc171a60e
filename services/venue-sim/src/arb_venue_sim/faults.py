"""Fault injection per venue, and the ASGI middleware that applies the HTTP faults.

Kinds (``POST /control/venues/{venue}/faults`` with ``{"kind", "value", "duration_s"}``;
``duration_s`` absent or null = until ``DELETE``):

* ``order_latency_ms`` (value: milliseconds, required): ``POST`` / ``DELETE /api/v3/order``
  are processed at once but answered ``value`` ms late (a client timeout then leaves an
  *unknown outcome*).
* ``lose_order_responses`` (value: probability, default 1): ``POST /api/v3/order`` is
  executed, then the TCP connection is closed without an answer.
* ``reject_orders`` (probability, default 1): new orders are rejected with ``-2010``
  "Order rejected by the venue (simulated fault)." (recorded as REJECTED).
* ``http_5xx`` (probability, default 1): every REST call answers ``503``
  ``Service Unavailable`` (text/plain); nothing is executed.
* ``drop_ws``: closes every WebSocket of the venue and refuses new ones while active.
* ``ws_gap`` (probability, default 1): a 100 ms depth flush is dropped, so ``@depth@100ms``
  clients see ``U > previous u + 1`` and must resync.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from arb_common.clock import SYSTEM_CLOCK, Clock

from .metrics import FAULTS_ACTIVE, REJECTS

logger = logging.getLogger(__name__)

KINDS = ("order_latency_ms", "lose_order_responses", "reject_orders", "http_5xx", "drop_ws",
         "ws_gap")
PROBABILITY_KINDS = ("lose_order_responses", "reject_orders", "http_5xx", "ws_gap")

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

    def to_json(self, now_ns: int) -> dict[str, Any]:
        left = None if self.expires_ns is None else max(0.0, (self.expires_ns - now_ns) / 1e9)
        return {"kind": self.kind, "value": self.value, "duration_s": self.duration_s,
                "remaining_s": None if left is None else round(left, 3)}


class Faults:
    """Active faults of one venue; expired ones disappear on the next read."""

    def __init__(self, venue: str, clock: Clock = SYSTEM_CLOCK, seed: int = 0) -> None:
        self.venue = venue
        self.clock = clock
        self._faults: dict[str, Fault] = {}
        self._rng = random.Random(f"{seed}:faults:{venue}")
        self.on_change: list[Callable[[str], None]] = []

    def add(self, kind: str, value: float | None, duration_s: float | None) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}")
        if kind == "order_latency_ms" and (value is None or value < 0):
            raise ValueError("value: order_latency_ms needs a value >= 0 (milliseconds)")
        if kind in PROBABILITY_KINDS and value is not None and not 0 <= value <= 1:
            raise ValueError(f"value: {kind} takes a probability between 0 and 1")
        if duration_s is not None and duration_s <= 0:
            raise ValueError("duration_s: must be > 0 (omit it for 'until deleted')")
        now = self.clock.monotonic_ns()
        expires = None if duration_s is None else now + int(duration_s * 1e9)
        fault = Fault(kind, value, duration_s, now, expires)
        self._faults[kind] = fault
        FAULTS_ACTIVE.labels(self.venue, kind).set(1)
        logger.warning("fault injected venue=%s kind=%s value=%s duration_s=%s", self.venue,
                       kind, value, duration_s)
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

    def to_json(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic_ns()
        return [f.to_json(now) for f in self.active()]


class ResponseLost(ConnectionResetError):
    """Raised (in-process transports only) where a real server drops the connection."""


class FaultMiddleware:
    """Outermost ASGI wrapper of a venue app: applies http_5xx, order latency and lost
    responses. Sits outside Starlette so that ``send`` is the server's own callable and the
    TCP connection can be cut without an answer."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path.startswith("/api/") and self.faults.fires("http_5xx"):
            REJECTS.labels(self.faults.venue, "fault_http_5xx").inc()
            await _plain(send, 503, b"Service Unavailable")
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
            await _drop_connection(send)
            return
        if latency is not None and latency.value:
            await asyncio.sleep(latency.value / 1000.0)
        for message in held:
            await send(message)


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

"""Binance request weight: per-route weights, the one-minute used-weight counter of a venue
(``X-MBX-USED-WEIGHT-1M`` on every ``/api/`` answer) and the 429 / 418 answers.

The simulated venue is one IP: every client of a venue shares its counter, as clients behind
one address share Binance's. The counter always runs; it is *enforced* only while the
``weight_limit`` fault is active (see faults.py), so benchmarks are never throttled by
accident.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs

import orjson

WEIGHT_LIMIT_1M = 6000  # as published in exchangeInfo.rateLimits
WINDOW_MS = 60_000
RATE_LIMIT_MSG = ("Too much request weight used; current limit is {limit} request weight per "
                  "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling "
                  "the API.")
BAN_MSG = ("Way too much request weight used; IP banned until {until}. Please use WebSocket "
           "Streams for live updates to avoid bans.")

_FIXED: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/ping"): 1, ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20, ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): 1, ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1, ("DELETE", "/api/v3/openOrders"): 1,
    ("GET", "/api/v3/account"): 20,
}


def weight_of(method: str, path: str, query: bytes) -> int:
    """Request weight of one REST call (binance-spot.md 4.4; unknown routes weigh 1)."""
    fixed = _FIXED.get((method, path))
    if fixed is not None:
        return fixed
    params = parse_qs(query.decode("latin-1"))
    if path == "/api/v3/depth":
        try:
            limit = int(params.get("limit", ["100"])[0])
        except ValueError:
            limit = 100
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    if path == "/api/v3/ticker/bookTicker":
        return 2 if "symbol" in params else 4
    if path == "/api/v3/openOrders":
        return 6 if "symbol" in params else 80
    if path == "/api/v3/myTrades":
        return 5 if "orderId" in params else 20
    return 1


class WeightCounter:
    """Used weight in the current clock minute (Binance resets its limiter each minute)."""

    def __init__(self) -> None:
        self.window = -1
        self.used = 0

    def add(self, weight: int, now_ms: int) -> int:
        window = now_ms // WINDOW_MS
        if window != self.window:
            self.window, self.used = window, 0
        self.used += weight
        return self.used

    def current(self, now_ms: int) -> int:
        return self.used if now_ms // WINDOW_MS == self.window else 0

    @staticmethod
    def seconds_to_reset(now_ms: int) -> int:
        return max(1, math.ceil((WINDOW_MS - now_ms % WINDOW_MS) / 1000))


def error_body(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})

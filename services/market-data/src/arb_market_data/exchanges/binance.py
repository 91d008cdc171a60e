"""Binance spot dialect: stream names, URLs, and decoders for depth frames and snapshots.

Pure functions (no I/O). Every decoder raises :class:`arb_common.errors.DecodeError` with a
reason when a frame is malformed, so the feed can log one line, count it and carry on.
See /work/shared/protocols/binance-spot.md §1.5, §1.6 and §2.4.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from arb_common.errors import DecodeError
from arb_common.messages import Level
from arb_common.money import D

from ..book import DepthSnapshot, DepthUpdate

DEPTH_STREAM = "depth@100ms"


def wire_symbol(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTCUSDT`` (REST and payload form)."""
    return symbol.replace("-", "").upper()


def stream_name(symbol: str) -> str:
    """``BTC-USDT`` -> ``btcusdt@depth@100ms`` (stream names are lowercase)."""
    return f"{wire_symbol(symbol).lower()}@{DEPTH_STREAM}"


def uses_combined_url(ws_url: str) -> bool:
    return urlsplit(ws_url).path.rstrip("/").endswith("/stream")


def stream_url(ws_url: str, symbols: list[str]) -> str:
    """Combined-stream URL (``.../stream?streams=a/b``) when the base is ``/stream``; else the
    base URL itself, and the streams are requested with :func:`subscribe_message`."""
    if not uses_combined_url(ws_url):
        return ws_url
    streams = "/".join(stream_name(s) for s in symbols)
    return f"{ws_url.rstrip('/')}?{urlencode({'streams': streams}, safe='/@')}"


def subscribe_message(symbols: list[str], request_id: int) -> str:
    """Live SUBSCRIBE request: ``{"method":"SUBSCRIBE","params":[...],"id":1}``."""
    params = [stream_name(s) for s in symbols]
    return orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": request_id}).decode()


def snapshot_url(rest_url: str, symbol: str, limit: int) -> str:
    return f"{rest_url.rstrip('/')}/api/v3/depth?symbol={wire_symbol(symbol)}&limit={limit}"


def _levels(raw: Any, what: str) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise DecodeError(f"{what}: expected a list of [price, qty], got {type(raw).__name__}")
    out: list[Level] = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise DecodeError(f"{what}: bad level {level!r}")
        price, qty = level[0], level[1]
        if not isinstance(price, str) or not isinstance(qty, str):
            raise DecodeError(f"{what}: price and qty must be strings, got {level!r}")
        try:
            p, q = D(price), D(qty)
        except ValueError:
            raise DecodeError(f"{what}: non-numeric level {level!r}") from None
        if p <= 0 or q < 0:
            raise DecodeError(f"{what}: negative or zero price in level {level!r}")
        out.append((p, q))
    return tuple(out)


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"field {key!r} missing or not an integer (got {value!r})")
    return value


def decode_json(raw: str | bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"bad JSON: {exc}") from None


def parse_depth_update(data: dict[str, Any], symbols: dict[str, str], recv_ts: int) -> DepthUpdate:
    """Decode a diff-depth event. ``symbols`` maps wire symbol -> our symbol.

    Raw payload::

        {"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,
         "b":[["0.0024","10"]],"a":[["0.0026","100"]]}
    """
    wire = data.get("s")
    if not isinstance(wire, str):
        raise DecodeError(f"field 's' missing or not a string (got {wire!r})")
    symbol = symbols.get(wire.upper())
    if symbol is None:
        raise DecodeError(f"unexpected symbol {wire!r}")
    first, final = _int_field(data, "U"), _int_field(data, "u")
    if first > final:
        raise DecodeError(f"U={first} > u={final}")
    return DepthUpdate(
        symbol=symbol,
        first_id=first,
        final_id=final,
        bids=_levels(data.get("b"), "b"),
        asks=_levels(data.get("a"), "a"),
        event_ts=_int_field(data, "E"),
        recv_ts=recv_ts,
    )


def parse_frame(
    raw: str | bytes, symbols: dict[str, str], recv_ts: int
) -> DepthUpdate | dict[str, Any]:
    """Decode one WebSocket text frame: a depth update, or a control/other dict to log.

    Combined-stream frame (``/stream``)::

        {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,
         "s":"BTCUSDT","U":157,"u":160,"b":[["60000.10","0.5"]],"a":[["60000.20","0"]]}}

    Subscribe reply ``{"result":null,"id":1}`` and ``{"e":"serverShutdown","E":...}`` come back
    as plain dicts.
    """
    msg = decode_json(raw)
    if not isinstance(msg, dict):
        raise DecodeError(f"frame is not a JSON object: {type(msg).__name__}")
    data = msg["data"] if "stream" in msg and "data" in msg else msg
    if not isinstance(data, dict):
        raise DecodeError("combined frame 'data' is not an object")
    if data.get("e") == "depthUpdate":
        return parse_depth_update(data, symbols, recv_ts)
    if "code" in data and "msg" in data:
        raise DecodeError(f"venue error {data.get('code')}: {data.get('msg')}")
    if "result" in data or data.get("e") == "serverShutdown":
        return data
    raise DecodeError(f"unknown frame (keys {sorted(data)[:6]})")


def parse_snapshot(body: str | bytes) -> DepthSnapshot:
    """Decode ``GET /api/v3/depth``.

    Raw payload::

        {"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],
         "asks":[["4.00000200","12.00000000"]]}
    """
    data = decode_json(body)
    if not isinstance(data, dict):
        raise DecodeError("depth snapshot is not a JSON object")
    if "code" in data and "msg" in data:
        raise DecodeError(f"venue error {data.get('code')}: {data.get('msg')}")
    return DepthSnapshot(
        last_update_id=_int_field(data, "lastUpdateId"),
        bids=_levels(data.get("bids"), "bids"),
        asks=_levels(data.get("asks"), "asks"),
    )


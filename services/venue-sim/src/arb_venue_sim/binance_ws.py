"""Binance spot WebSocket market streams of one simulated venue.

Paths: ``/ws``, ``/ws/<stream>[/<stream>...]`` (raw payloads), ``/stream?streams=a/b`` and
``/stream/ws/<n>`` (combined wrapper ``{"stream": ..., "data": ...}``); live
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY``.

Streams (``<sym>`` lower-case wire symbol):

* ``<sym>@depth@100ms`` / ``<sym>@depth`` (= ``@1000ms``): diff depth, every 100 ms / 1 s,
  e.g. ``{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":157,"u":160,
  "b":[["60000.00000000","0.40000000"]],"a":[["60002.00000000","0.00000000"]]}``;
* ``<sym>@depth5|10|20[@100ms]``: partial book ``{"lastUpdateId":160,"bids":[...],"asks":[...]}``;
* ``<sym>@bookTicker``: ``{"u":160,"s":"BTCUSDT","b":"...","B":"...","a":"...","A":"..."}``
  whenever the best bid or ask changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from arb_common.clock import Clock

from .book import DepthEvent
from .faults import Faults
from .market import Market
from .metrics import REJECTS, WS_CONNECTIONS, WS_FRAMES
from .orders import w8

logger = logging.getLogger(__name__)

STREAM_RE = re.compile(r"^([a-z0-9]+)@(depth(5|10|20)?(@100ms|@1000ms)?|bookTicker)$")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
FLUSH_S = 0.1
SLOTS = 10  # flush phases per FLUSH_S (see WsHub.flush_slot)


@dataclass(frozen=True)
class StreamKey:
    symbol: str  # wire, upper case
    kind: str  # diff / partial / ticker
    levels: int
    fast: bool


def parse_stream(name: str, known: set[str]) -> StreamKey | None:
    m = STREAM_RE.match(name)
    if m is None or m.group(1).upper() not in known:
        return None
    symbol = m.group(1).upper()
    if m.group(2) == "bookTicker":
        return StreamKey(symbol, "ticker", 0, True)
    fast = m.group(4) == "@100ms"
    if m.group(3):
        return StreamKey(symbol, "partial", int(m.group(3)), fast)
    return StreamKey(symbol, "diff", 0, fast)


class Connection:
    def __init__(self, ws: WebSocket, combined: bool, queue_max: int) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: dict[str, StreamKey] = {}
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_max)
        self.closed = False

    def send(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            logger.warning("websocket client too slow, disconnecting")
            self.close()

    def push(self, stream: str, raw: str) -> None:
        self.send(f'{{"stream":"{stream}","data":{raw}}}' if self.combined else raw)

    def reply(self, obj: dict[str, Any]) -> None:
        self.send(orjson.dumps(obj).decode())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def writer(self, venue: str) -> None:
        frames = WS_FRAMES.labels(venue)
        while True:
            text = await self.queue.get()
            if text is None:
                await self.ws.close(code=1001, reason="going away")
                return
            await self.ws.send_text(text)
            frames.inc()


class WsHub:
    """Fans depth events of one venue out to its WebSocket connections."""

    def __init__(self, venue: str, market: Market, faults: Faults, clock: Clock,
                 queue_max: int = 5000) -> None:
        self.venue = venue
        self.market = market
        self.faults = faults
        self.clock = clock
        self.queue_max = queue_max
        self.conns: set[Connection] = set()
        self.known = set(market.by_wire)
        self._fast: dict[str, list[DepthEvent]] = {}
        self._slow: dict[str, list[DepthEvent]] = {}
        self._best: dict[str, tuple[Any, Any]] = {}
        self.flushes = 0
        self._symbol_flushes: dict[str, int] = {}
        # slot -> its symbols: by index, offset per venue (a stable hash of its name)
        offset = sum(venue.encode()) % SLOTS
        self._slots: dict[int, list[str]] = {}
        for i, symbol in enumerate(sorted(self.known)):
            self._slots.setdefault((i + offset) % SLOTS, []).append(symbol)

    # ------------------------------------------------------------ events in
    def on_depth(self, event: DepthEvent) -> None:
        self._fast.setdefault(event.symbol, []).append(event)
        self._slow.setdefault(event.symbol, []).append(event)
        book = self.market.book(self.venue, event.symbol)
        best = (book.best("bids"), book.best("asks"))
        if best != self._best.get(event.symbol):
            self._best[event.symbol] = best
            (bid, ask) = best
            if bid is None or ask is None:
                return
            raw = orjson.dumps({"u": book.update_id, "s": event.symbol, "b": w8(bid[0]),
                                "B": w8(bid[1]), "a": w8(ask[0]), "A": w8(ask[1])}).decode()
            self._publish(StreamKey(event.symbol, "ticker", 0, True), raw)

    def flush(self) -> None:
        """Every symbol's 100 ms flush at once (tests; the hub's own loop staggers them)."""
        for slot in range(SLOTS):
            self.flush_slot(slot)

    def flush_slot(self, slot: int) -> None:
        """The 100 ms flush of the symbols in ``slot``: diff and partial-book streams.

        A real venue's per-symbol ``@100ms`` streams are not phase-locked to one another, so
        the symbols are spread over :data:`SLOTS` phases 10 ms apart (by their index, offset
        per venue): each still gets exactly one diff per 100 ms, but subscribers do not get
        every symbol of every venue in the same millisecond."""
        symbols = self._slots.get(slot, ())
        if not symbols:
            return
        if slot == 0:
            self.flushes += 1
        for symbol in symbols:
            self._flush_symbol(symbol)

    def _flush_symbol(self, symbol: str) -> None:
        n = self._symbol_flushes[symbol] = self._symbol_flushes.get(symbol, 0) + 1
        events = self._fast.pop(symbol, None)
        if events and not self.faults.fires("ws_gap"):  # a gap: these ids are never sent
            self._publish(StreamKey(symbol, "diff", 0, True), self._diff(symbol, events))
        slow_due = n % 10 == 0
        if slow_due:
            slow = self._slow.pop(symbol, None)
            if slow:
                self._publish(StreamKey(symbol, "diff", 0, False), self._diff(symbol, slow))
        self._publish_partials(symbol, slow_due)

    def _diff(self, symbol: str, events: list[DepthEvent]) -> str:
        bids: dict[Any, Any] = {}
        asks: dict[Any, Any] = {}
        for ev in events:
            bids.update(ev.bids)
            asks.update(ev.asks)
        return orjson.dumps({
            "e": "depthUpdate", "E": self.clock.now_ms(), "s": symbol,
            "U": events[0].first_id, "u": events[-1].last_id,
            "b": [[w8(p), w8(q)] for p, q in sorted(bids.items(), reverse=True)],
            "a": [[w8(p), w8(q)] for p, q in sorted(asks.items())]}).decode()

    def _publish_partials(self, symbol: str, slow_due: bool) -> None:
        wanted = {k for c in self.conns for k in c.streams.values()
                  if k.kind == "partial" and k.symbol == symbol and (k.fast or slow_due)}
        for key in wanted:
            book = self.market.book(self.venue, key.symbol)
            raw = orjson.dumps({
                "lastUpdateId": book.update_id,
                "bids": [[w8(p), w8(q)] for p, q in book.levels("bids", key.levels)],
                "asks": [[w8(p), w8(q)] for p, q in book.levels("asks", key.levels)]}).decode()
            self._publish(key, raw)

    def _publish(self, key: StreamKey, raw: str) -> None:
        for conn in self.conns:
            for name, k in conn.streams.items():
                if k == key:
                    conn.push(name, raw)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = FLUSH_S / SLOTS
        next_at = loop.time()
        slot = 0
        while True:
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.flush_slot(slot)
            slot = (slot + 1) % SLOTS

    # ------------------------------------------------------------ connections
    def drop_all(self) -> None:
        logger.warning("dropping all websockets venue=%s count=%d", self.venue, len(self.conns))
        for conn in list(self.conns):
            conn.close()

    def handle_control(self, conn: Connection, text: str) -> None:  # noqa: C901 - protocol table
        try:
            msg = json.loads(text)
        except ValueError as exc:
            conn.reply({"code": 3, "msg": f"Invalid JSON: {exc}"})
            return
        if not isinstance(msg, dict) or "method" not in msg:
            conn.reply({"code": 2, "msg": "Invalid request: missing field `method`"})
            return
        rid = msg.get("id")
        if "id" not in msg or not _valid_id(rid):
            conn.reply({"code": 2,
                        "msg": "Invalid request: request ID must be an unsigned integer"})
            return
        method, params = msg["method"], msg.get("params", [])
        if method not in METHODS:
            conn.reply({"code": 2, "msg": f"Invalid request: unknown variant {method}, expected "
                        "one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
                        "`SET_PROPERTY`, `GET_PROPERTY`", "id": rid})
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                conn.reply({"code": 2, "msg": "Invalid request: params must be a list of "
                            "stream names", "id": rid})
                return
            keys = {p: parse_stream(p, self.known) for p in params}
            bad = [p for p, k in keys.items() if k is None]
            if bad and method == "SUBSCRIBE":
                conn.reply({"code": 2, "msg": f"Invalid request: invalid stream name {bad[0]}",
                            "id": rid})
                return
            for name, key in keys.items():
                if method == "SUBSCRIBE" and key is not None:
                    conn.streams[name] = key
                else:
                    conn.streams.pop(name, None)
            conn.reply({"result": None, "id": rid})
        elif method == "LIST_SUBSCRIPTIONS":
            conn.reply({"result": list(conn.streams), "id": rid})
        elif not isinstance(params, list) or not params or params[0] != "combined":
            conn.reply({"code": 0, "msg": "Unknown property", "id": rid})
        elif method == "GET_PROPERTY":
            conn.reply({"result": conn.combined, "id": rid})
        elif len(params) != 2 or not isinstance(params[1], bool):
            conn.reply({"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid})
        else:
            conn.combined = params[1]
            conn.reply({"result": None, "id": rid})

    async def serve(self, ws: WebSocket, combined: bool, url_streams: list[str]) -> None:
        if self.faults.get("drop_ws") is not None:
            REJECTS.labels(self.venue, "fault_drop_ws").inc()
            await ws.close(code=1013)  # before accept: the handshake is refused
            return
        await ws.accept()
        conn = Connection(ws, combined, self.queue_max)
        for name in url_streams:
            key = parse_stream(name, self.known)
            if key is not None:
                conn.streams[name] = key
        self.conns.add(conn)
        WS_CONNECTIONS.labels(self.venue).set(len(self.conns))
        writer = asyncio.create_task(conn.writer(self.venue))
        try:
            while not conn.closed:
                text = await ws.receive_text()
                self.handle_control(conn, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.conns.discard(conn)
            WS_CONNECTIONS.labels(self.venue).set(len(self.conns))
            conn.close()
            try:
                await asyncio.wait_for(writer, timeout=2)
            except Exception:  # noqa: BLE001 - the peer is gone; nothing left to send
                writer.cancel()


def _valid_id(rid: Any) -> bool:
    """A request id may be a 64-bit integer, an alphanumeric string (<= 36) or null."""
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -(2**63) <= rid < 2**63
    return isinstance(rid, str) and re.fullmatch(r"[A-Za-z0-9-]{1,36}", rid) is not None


def register_ws(app: FastAPI, hub: WsHub) -> None:
    @app.websocket("/ws")
    async def ws_raw(ws: WebSocket) -> None:
        await hub.serve(ws, False, [])

    @app.websocket("/ws/{rest:path}")
    async def ws_raw_streams(ws: WebSocket, rest: str) -> None:
        await hub.serve(ws, False, [p for p in rest.split("/") if p])

    @app.websocket("/stream")
    async def ws_combined(ws: WebSocket) -> None:
        streams = ws.query_params.get("streams", "")
        await hub.serve(ws, True, [p for p in streams.split("/") if p])

    @app.websocket("/stream/{rest:path}")
    async def ws_combined_path(ws: WebSocket, rest: str) -> None:
        streams = ws.query_params.get("streams", "")
        await hub.serve(ws, True, [p for p in streams.split("/") if p])

"""A minimal Binance-spot market-data venue for tests (protocol fixture, not a simulator).

One ``websockets`` server answers both the combined-stream WebSocket (``/stream?streams=...``)
and ``GET /api/v3/depth``. A producer task changes each book every ``interval`` and pushes
``depthUpdate`` frames in the documented wire format; every book state is kept by update id so
a test can check a published book against the venue's truth. Faults: lose events (a real gap),
send raw (malformed) frames, drop every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Levels = list[tuple[Decimal, Decimal]]


class FakeBinance:
    def __init__(self, symbols: dict[str, Decimal], *, interval: float = 0.01, seed: int = 7):
        self.rng = random.Random(seed)
        self.interval = interval
        self.mids = symbols  # wire symbol -> mid price
        self.books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self.last_id: dict[str, int] = {}
        self.history: dict[tuple[str, int], tuple[Levels, Levels]] = {}
        for wire, mid in symbols.items():
            self.books[wire] = {
                "b": {mid - Decimal(k) / 100: Decimal(k) for k in range(1, 31)},
                "a": {mid + Decimal(k) / 100: Decimal(k) for k in range(1, 31)},
            }
            self.last_id[wire] = 1000
            self._record(wire)
        self.conns: dict[ServerConnection, set[str]] = {}
        self.lose_next = 0  # events to apply but not send (sequence gap)
        self.raw_frames: list[bytes] = []  # sent as-is before the next update
        self.snapshot_requests = 0
        self.connections_total = 0
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._server = await serve(self._ws, "127.0.0.1", 0, process_request=self._http)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        self._producer = asyncio.create_task(self._produce())

    async def stop(self) -> None:
        if self._producer:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def drop_connections(self) -> None:
        for ws in list(self.conns):
            await ws.close(1001, "going away")

    # ------------------------------------------------------------ book truth
    def _record(self, wire: str) -> None:
        book = self.books[wire]
        self.history[(wire, self.last_id[wire])] = (
            sorted(book["b"].items(), reverse=True)[:20],
            sorted(book["a"].items())[:20],
        )

    def _step(self, wire: str) -> dict[str, object]:
        book, mid = self.books[wire], self.mids[wire]
        first = self.last_id[wire] + 1
        changes: dict[str, list[list[str]]] = {"b": [], "a": []}
        for _ in range(self.rng.randint(1, 3)):
            side = self.rng.choice("ba")
            k = Decimal(self.rng.randint(1, 40)) / 100
            price = mid - k if side == "b" else mid + k
            qty = Decimal(self.rng.choice([0, 0, 1, 2, 3, 5])) / 2
            if qty == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty
            changes[side].append([f"{price:.8f}", f"{qty:.8f}"])
        self.last_id[wire] = first + self.rng.randint(0, 2)
        self._record(wire)
        return {"e": "depthUpdate", "E": 1_700_000_000_000 + first, "s": wire, "U": first,
                "u": self.last_id[wire], "b": changes["b"], "a": changes["a"]}

    async def _produce(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for wire in self.books:
                event = self._step(wire)
                if self.lose_next > 0:
                    self.lose_next -= 1
                    continue
                stream = f"{wire.lower()}@depth@100ms"
                frame = orjson.dumps({"stream": stream, "data": event})
                for ws, streams in list(self.conns.items()):
                    while self.raw_frames:
                        await self._send(ws, self.raw_frames.pop(0))
                    if stream in streams:
                        await self._send(ws, frame)

    @staticmethod
    async def _send(ws: ServerConnection, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data.decode())

    # ------------------------------------------------------------ endpoints
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != "/api/v3/depth":
            return None  # WebSocket handshake
        self.snapshot_requests += 1
        wire = parse_qs(url.query)["symbol"][0]
        limit = int(parse_qs(url.query).get("limit", ["100"])[0])
        book = self.books[wire]
        body = {
            "lastUpdateId": self.last_id[wire],
            "bids": [[f"{p:.8f}", f"{q:.8f}"] for p, q in sorted(book["b"].items(),
                                                                 reverse=True)[:limit]],
            "asks": [[f"{p:.8f}", f"{q:.8f}"] for p, q in sorted(book["a"].items())[:limit]],
        }
        return connection.respond(200, orjson.dumps(body).decode())

    async def _ws(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        self.conns[ws] = set(query.get("streams", [""])[0].split("/"))
        self.connections_total += 1
        try:
            await ws.wait_closed()
        finally:
            self.conns.pop(ws, None)


@pytest.fixture
def fake_binance() -> type[FakeBinance]:
    """The protocol fixture class (a conftest cannot be imported from test modules)."""
    return FakeBinance

"""WebSocket market streams against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import websockets

D = Decimal


async def _recv(ws: Any, timeout: float = 3.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_raw_url_stream_diffs_are_contiguous_and_sync_with_rest(running: Any) -> None:
    async with websockets.connect(running.ws("alpha") + "/ws/btcusdt@depth@100ms") as ws:
        buffered = [await _recv(ws) for _ in range(3)]
        async with httpx.AsyncClient(base_url=running.url("alpha")) as http:
            snap = (await http.get("/api/v3/depth", params={"symbol": "BTCUSDT",
                                                             "limit": 1000})).json()
        events = buffered + [await _recv(ws) for _ in range(10)]
    for prev, cur in zip(events, events[1:], strict=False):
        assert "stream" not in cur  # raw payloads on /ws
        assert cur["U"] == prev["u"] + 1
        assert cur["E"] >= prev["E"]
    # the snapshot id falls inside the event stream: some event bridges it
    later = [e for e in events if e["u"] > snap["lastUpdateId"]]
    assert later and later[0]["U"] <= snap["lastUpdateId"] + 1


async def test_combined_stream_subscribe_list_unsubscribe(running: Any) -> None:
    url = running.ws("alpha") + "/stream?streams=ethusdt@bookTicker/solusdt@depth5@100ms"
    async with websockets.connect(url) as ws:
        seen: dict[str, Any] = {}
        while len(seen) < 2:
            msg = await _recv(ws)
            seen[msg["stream"]] = msg["data"]
        tick = seen["ethusdt@bookTicker"]
        assert list(tick) == ["u", "s", "b", "B", "a", "A"] and tick["s"] == "ETHUSDT"
        assert D(tick["b"]) < D(tick["a"])
        partial = seen["solusdt@depth5@100ms"]
        assert list(partial) == ["lastUpdateId", "bids", "asks"]
        assert len(partial["bids"]) == 5 and len(partial["asks"]) == 5
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"],
                                  "id": 1}))
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        await ws.send(json.dumps({"method": "UNSUBSCRIBE",
                                  "params": ["ethusdt@bookTicker", "solusdt@depth5@100ms"],
                                  "id": "x3"}))
        replies = {}
        while len(replies) < 3:
            msg = await _recv(ws)
            if "id" in msg:
                replies[msg["id"]] = msg
        assert replies[1] == {"result": None, "id": 1}
        assert sorted(replies[2]["result"]) == sorted(
            ["ethusdt@bookTicker", "solusdt@depth5@100ms", "btcusdt@depth@100ms"])
        assert replies["x3"] == {"result": None, "id": "x3"}
        await asyncio.sleep(0.25)
        while True:  # drain what was in flight before the unsubscribe
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except TimeoutError:
                break
        for _ in range(5):
            msg = await _recv(ws)
            assert msg["stream"] == "btcusdt@depth@100ms"
            assert msg["data"]["e"] == "depthUpdate"


async def test_stream_ws_path_and_raw_subscribe_ack(running: Any) -> None:
    """ccxt.pro connects to ``/stream/ws/0`` and needs the SUBSCRIBE ack."""
    async with websockets.connect(running.ws("beta") + "/stream/ws/0") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}')
        ack = await asyncio.wait_for(ws.recv(), 3)
        assert ack == '{"result":null,"id":1}'
        msg = await _recv(ws)
        assert msg["stream"] == "btcusdt@depth@100ms"
        await ws.send("not json")
        while True:
            err = await _recv(ws)
            if "code" in err:
                break
        assert err["code"] == 3
        await ws.send('{"method":"SUBSCRIBE","params":["nope@depth"],"id":5}')
        while True:
            err = await _recv(ws)
            if err.get("id") == 5:
                break
        assert err["code"] == 2


async def test_drop_ws_closes_connections_and_refuses_new_ones(running: Any) -> None:
    venue = running.sim.venues["alpha"]
    ws = await websockets.connect(running.ws("alpha") + "/ws/btcusdt@depth@100ms")
    await _recv(ws)
    venue.faults.add("drop_ws", None, 1.5)
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(50):
            await _recv(ws)
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(running.ws("alpha") + "/ws/btcusdt@depth@100ms")
    # beta is untouched
    async with websockets.connect(running.ws("beta") + "/ws/btcusdt@bookTicker") as other:
        await _recv(other)
    await asyncio.sleep(1.6)
    async with websockets.connect(running.ws("alpha") + "/ws/btcusdt@depth@100ms") as again:
        assert (await _recv(again))["e"] == "depthUpdate"


async def test_ws_gap_fault_skips_update_ids(running: Any) -> None:
    venue = running.sim.venues["alpha"]
    async with websockets.connect(running.ws("alpha") + "/ws/btcusdt@depth@100ms") as ws:
        first = await _recv(ws)
        venue.faults.add("ws_gap", None, 0.25)
        await asyncio.sleep(0.35)
        events = [first]
        for _ in range(3):
            events.append(await _recv(ws))
    gaps = [b["U"] - a["u"] for a, b in zip(events, events[1:], strict=False)]
    assert any(g > 1 for g in gaps)

"""Binance dialect: URLs, depth frames and snapshots, and malformed input."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arb_common.errors import DecodeError
from arb_market_data.book import DepthUpdate
from arb_market_data.exchanges import binance

SYMBOLS = {"BTCUSDT": "BTC-USDT", "ETHUSDT": "ETH-USDT"}

DEPTH = {"e": "depthUpdate", "E": 1672515782136, "s": "BTCUSDT", "U": 157, "u": 160,
         "b": [["60000.10", "0.5"], ["59999.00", "0.00000000"]], "a": [["60000.20", "1.25"]]}


def test_combined_stream_url_lists_every_symbol_lowercase() -> None:
    url = binance.stream_url("ws://127.0.0.1:8091/stream", ["BTC-USDT", "ETH-USDT"])
    assert url == "ws://127.0.0.1:8091/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"


def test_raw_endpoint_uses_live_subscribe() -> None:
    assert binance.stream_url("ws://h:1/ws", ["BTC-USDT"]) == "ws://h:1/ws"
    msg = orjson.loads(binance.subscribe_message(["BTC-USDT", "SOL-USDT"], 7))
    assert msg == {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms", "solusdt@depth@100ms"],
                   "id": 7}


def test_snapshot_url() -> None:
    assert (binance.snapshot_url("http://h:8091/", "ETH-USDT", 1000)
            == "http://h:8091/api/v3/depth?symbol=ETHUSDT&limit=1000")


def test_combined_depth_frame_parses_to_decimals() -> None:
    frame = orjson.dumps({"stream": "btcusdt@depth@100ms", "data": DEPTH})
    ev = binance.parse_frame(frame, SYMBOLS, recv_ts=123)
    assert ev == DepthUpdate(
        symbol="BTC-USDT", first_id=157, final_id=160,
        bids=((Decimal("60000.10"), Decimal("0.5")), (Decimal("59999.00"), Decimal("0"))),
        asks=((Decimal("60000.20"), Decimal("1.25")),), event_ts=1672515782136, recv_ts=123,
    )


def test_raw_depth_frame_parses() -> None:
    ev = binance.parse_frame(orjson.dumps(DEPTH).decode(), SYMBOLS, recv_ts=0)
    assert isinstance(ev, DepthUpdate) and ev.symbol == "BTC-USDT"


@pytest.mark.parametrize("frame", [
    b'{"result":null,"id":1}',
    b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
])
def test_control_frames_come_back_as_dicts(frame: bytes) -> None:
    assert isinstance(binance.parse_frame(frame, SYMBOLS, 0), dict)


def _with(**changes: object) -> bytes:
    data = {**DEPTH, **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(("frame", "reason"), [
    (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthU', "bad JSON"),
    (b"[1,2,3]", "not a JSON object"),
    (_with(U=None), "'U'"),
    (_with(u="160"), "'u'"),
    (_with(E=None), "'E'"),
    (_with(s=None), "'s'"),
    (_with(s="DOGEUSDT"), "unexpected symbol"),
    (_with(b=[["abc", "1"]]), "non-numeric"),
    (_with(a=[["NaN", "1"]]), "non-numeric"),
    (_with(a=[[60000.2, "1"]]), "strings"),
    (_with(b=[["1"]]), "bad level"),
    (_with(b="nope"), "expected a list"),
    (_with(a=[["-1", "1"]]), "negative"),
    (_with(U=170, u=160), "U=170 > u=160"),
    (b'{"code":-1121,"msg":"Invalid symbol."}', "venue error -1121"),
    (b'{"foo":1}', "unknown frame"),
])
def test_malformed_frames_raise_decode_error_saying_why(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        binance.parse_frame(frame, SYMBOLS, 0)
    assert reason in info.value.reason


def test_snapshot_parses_and_rejects_garbage() -> None:
    snap = binance.parse_snapshot(
        b'{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],'
        b'"asks":[["4.00000200","12.00000000"]]}'
    )
    assert snap.last_update_id == 1027024
    assert snap.asks == ((Decimal("4.00000200"), Decimal("12")),)
    for bad in (b"<html>", b'{"bids":[],"asks":[]}', b'{"code":-1003,"msg":"Too many"}'):
        with pytest.raises(DecodeError):
            binance.parse_snapshot(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
    | st.sampled_from(["depthUpdate", "BTCUSDT", "1.5", "x"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["e", "E", "s", "U", "u", "b", "a", "stream", "data",
                                       "result", "id", "code", "msg"]), children, max_size=8),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_decoder_only_ever_raises_decode_error(value: object) -> None:
    try:
        binance.parse_frame(orjson.dumps(value), SYMBOLS, 0)
    except DecodeError:
        pass

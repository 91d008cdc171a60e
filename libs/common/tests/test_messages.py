from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arb_common.errors import DecodeError
from arb_common.messages import Book, FillEvent, Intent, decode, encode

FILL = FillEvent(
    venue="alpha", symbol="BTC-USDT", client_order_id="a1", venue_trade_id="42", side="buy",
    quantity=Decimal("0.010"), price=Decimal("60000.10"), fee=Decimal("0.6000010"),
    fee_asset="USDT", ts=1,
)


def _enc(payload: object) -> bytes:
    return encode(
        payload, msg_id="id1", source="test", session="s", mode="paper", ts=7  # type: ignore[arg-type]
    )


def test_round_trip_keeps_decimals_exact_and_as_strings_on_the_wire() -> None:
    data = _enc(FILL)
    assert b'"price":"60000.10"' in data
    env, payload = decode(data)
    assert env.type == "exec.fill" and env.v == 1 and env.id == "id1"
    assert payload == FILL


def test_book_levels_round_trip() -> None:
    book = Book(venue="beta", symbol="ETH-USDT", seq=9,
                bids=[(Decimal("3000.1"), Decimal("2"))],
                asks=[(Decimal("3000.2"), Decimal("1.5"))])
    assert decode(_enc(book))[1] == book


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "bad envelope"),
        (b'{"type":"exec.fill","v":1}', "bad envelope"),
        (b'{"type":"nope","v":1,"id":"x","ts":1,"source":"s","session":"s","mode":"m","payload":{}}',
         "unknown message type"),
        (b'{"type":"exec.fill","v":9,"id":"x","ts":1,"source":"s","session":"s","mode":"m","payload":{}}',
         "unsupported version"),
        (b'{"type":"exec.fill","v":1,"id":"x","ts":1,"source":"s","session":"s","mode":"m","payload":{"venue":1}}',
         "bad exec.fill payload"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode(data, "exec.fill.alpha.BTC-USDT")
    assert reason in str(exc.value)
    assert "exec.fill.alpha.BTC-USDT" in str(exc.value)


def test_unregistered_payload_type_is_refused() -> None:
    with pytest.raises(TypeError):
        _enc(object())


@given(st.binary(max_size=300))
def test_decoder_never_raises_anything_but_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@given(
    qty=st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1e9"), places=8),
    px=st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1e7"), places=8),
)
def test_intent_decimals_survive_the_wire(qty: Decimal, px: Decimal) -> None:
    intent = Intent(intent_id="t:open", trade_id="t", symbol="BTC-USDT", action="open",
                    buy_venue="alpha", sell_venue="beta", quantity=qty, buy_price=px,
                    sell_price=px, net_spread_bps=Decimal("1.5"))
    assert decode(_enc(intent))[1] == intent

"""LazyBook: the same book as the strict decode, levels decoded on first use, bad input
named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arb_common.books import BookError, LazyBook, decode_book
from arb_common.errors import DecodeError
from arb_common.messages import Book, TradingControl, decode, encode


def wire(book: Book) -> bytes:
    return encode(book, msg_id="m", source="t", session="s", mode="paper", ts=5)


BOOK = Book(venue="alpha", symbol="BTC-USDT", seq=9,
            bids=[(Decimal("100.5"), Decimal("0.1")), (Decimal("100.4"), Decimal("2"))],
            asks=[(Decimal("100.7"), Decimal("1.25"))], venue_ts=3, recv_ts=4)


def test_reads_like_the_strict_decode() -> None:
    env, lazy = decode_book(wire(BOOK))
    assert isinstance(lazy, LazyBook) and env.type == "md.book" and env.ts == 5
    assert (lazy.venue, lazy.symbol, lazy.seq, lazy.venue_ts, lazy.recv_ts) == (
        "alpha", "BTC-USDT", 9, 3, 4)
    assert lazy.best_bid() == Decimal("100.5") and lazy.best_ask() == Decimal("100.7")
    assert lazy.to_book() == decode(wire(BOOK))[1] == BOOK
    assert lazy.bids is lazy.bids  # decoded once


def test_an_empty_side_has_no_best_price() -> None:
    _, lazy = decode_book(wire(Book(venue="a", symbol="X", seq=1, bids=[], asks=[])))
    assert lazy.best_bid() is None and lazy.best_ask() is None and lazy.bids == []


def test_a_bad_side_is_named_when_read() -> None:
    data = wire(BOOK).replace(b'"100.7"', b'"abc"')
    _, lazy = decode_book(data)  # the scalar fields are fine: the book is accepted
    with pytest.raises(BookError, match=r"alpha/BTC-USDT seq=9: bad asks"):
        lazy.best_ask()
    with pytest.raises(BookError, match="bad asks"):
        _ = lazy.asks
    assert lazy.best_bid() == Decimal("100.5")


@pytest.mark.parametrize(("data", "match"), [
    (b"{not json", "bad envelope"),
    (wire(BOOK).replace(b'"seq":9', b'"seq":"9"'), "bad md.book payload"),
    (wire(BOOK).replace(b'"v":1', b'"v":7'), "unsupported version 7"),
])
def test_bad_envelopes_and_scalars_are_refused_at_once(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_book(data, "md.book.alpha.BTC-USDT")


def test_other_message_types_decode_as_usual() -> None:
    data = encode(TradingControl(enabled=False), msg_id="c", source="t", session="s",
                  mode="paper", ts=1)
    _, payload = decode_book(data)
    assert payload == TradingControl(enabled=False)

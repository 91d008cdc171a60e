"""Marks take the mid of a book read off the wire without decoding its levels."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from arb_common.books import decode_book
from arb_common.messages import Book, encode
from arb_state.marks import Marks


def wire(book: Book) -> bytes:
    return encode(book, msg_id="b", source="t", session="s", mode="paper", ts=1)


def test_mid_of_a_lazy_book_and_no_mid_without_two_sides() -> None:
    marks = Marks(max_age_s=None)
    book = Book(venue="alpha", symbol="BTC-USDT", seq=1,
                bids=[(Decimal("100"), Decimal("1")), (Decimal("99"), Decimal("3"))],
                asks=[(Decimal("101"), Decimal("2"))])
    env, lazy = decode_book(wire(book))
    asyncio.run(marks.on_book(env, lazy))
    assert marks.mid("alpha", "BTC-USDT") == Decimal("100.5")
    env, empty = decode_book(wire(Book(venue="beta", symbol="BTC-USDT", seq=2, bids=[],
                                       asks=[(Decimal("101"), Decimal("2"))])))
    asyncio.run(marks.on_book(env, empty))
    assert marks.mid("beta", "BTC-USDT") is None

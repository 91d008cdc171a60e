"""Books decoded lazily, for the services that see every book but use few of their levels.

``md.book`` arrives in bursts (a Binance ``depth@100ms`` stream flushes every symbol at
once): 2 venues x 10 symbols = 20 books within a millisecond, every 100 ms. Decoding all 40
levels of each to :class:`~decimal.Decimal` costs more than everything else a consumer does
with it (measured: 37 us of 60 us per book in the strategy), and a burst is handled one book
after the other, so the last book of a burst waits for the decoding of all the others.

:func:`decode_book` checks the envelope and the book's scalar fields strictly (as
:func:`arb_common.messages.decode` does) and keeps each side as raw JSON. A side becomes
``list[(price, quantity)]`` the first time it is read (:attr:`LazyBook.bids` /
:attr:`LazyBook.asks`), strictly: a malformed side raises :class:`BookError` then, which
the consumer counts and drops (latest-wins data: the next book replaces it). The best price
of a side (:meth:`LazyBook.best_bid` / :meth:`LazyBook.best_ask`) is read from the raw JSON
without decoding the side, so "can this book matter?" costs two Decimals.

A :class:`LazyBook` reads like a :class:`~arb_common.messages.Book` (same attribute names);
:meth:`LazyBook.to_book` makes a real one.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from .errors import DecodeError
from .messages import MESSAGE_TYPES, Book, Envelope, Level

BOOK_TYPE = "md.book"
BOOK_VERSION = MESSAGE_TYPES[BOOK_TYPE][0]


class BookError(ValueError):
    """A side of a book that does not decode (say which book and why)."""


class _BookFrame(msgspec.Struct, kw_only=True, frozen=True):
    venue: str
    symbol: str
    seq: int
    bids: msgspec.Raw
    asks: msgspec.Raw
    venue_ts: int = 0
    recv_ts: int = 0


_env_decoder = msgspec.json.Decoder(Envelope)
_frame_decoder = msgspec.json.Decoder(_BookFrame)
_side_decoder = msgspec.json.Decoder(list[tuple[Decimal, Decimal]])


class LazyBook:
    """One normalized book; its levels are decoded on first use."""

    __slots__ = ("venue", "symbol", "seq", "venue_ts", "recv_ts", "_raw", "_sides")

    def __init__(self, frame: _BookFrame) -> None:
        self.venue = frame.venue
        self.symbol = frame.symbol
        self.seq = frame.seq
        self.venue_ts = frame.venue_ts
        self.recv_ts = frame.recv_ts
        self._raw = (bytes(frame.bids), bytes(frame.asks))
        self._sides: list[list[Level] | None] = [None, None]

    @property
    def bids(self) -> list[Level]:
        return self._side(0)

    @property
    def asks(self) -> list[Level]:
        return self._side(1)

    def best_bid(self) -> Decimal | None:
        return self._best(0)

    def best_ask(self) -> Decimal | None:
        return self._best(1)

    def to_book(self) -> Book:
        return Book(venue=self.venue, symbol=self.symbol, seq=self.seq, bids=self.bids,
                    asks=self.asks, venue_ts=self.venue_ts, recv_ts=self.recv_ts)

    def _side(self, i: int) -> list[Level]:
        side = self._sides[i]
        if side is None:
            try:
                side = self._sides[i] = _side_decoder.decode(self._raw[i])
            except msgspec.DecodeError as exc:
                name = ("bids", "asks")[i]
                raise BookError(f"book {self.venue}/{self.symbol} seq={self.seq}: bad {name}: "
                                f"{exc}") from None
        return side

    def _best(self, i: int) -> Decimal | None:
        side = self._sides[i]
        if side is not None:
            return side[0][0] if side else None
        # Compact JSON as our encoder writes it: [["price","qty"],...]; anything else (or a
        # malformed price) takes the strict path.
        parts = self._raw[i].split(b'"', 2)
        if len(parts) < 3:
            return self._strict_best(i)
        try:
            price = Decimal(parts[1].decode())
        except (InvalidOperation, UnicodeDecodeError):
            return self._strict_best(i)
        return price if price.is_finite() else self._strict_best(i)

    def _strict_best(self, i: int) -> Decimal | None:
        side = self._side(i)
        return side[0][0] if side else None

    def __repr__(self) -> str:
        return f"LazyBook({self.venue}/{self.symbol} seq={self.seq})"


def decode_book(data: bytes, where: str = "") -> tuple[Envelope, Any]:
    """Like :func:`arb_common.messages.decode` for ``md.book`` subjects: (envelope,
    :class:`LazyBook`). Any other message type decodes as usual (the caller checks)."""
    try:
        env = _env_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad envelope: {exc}", where) from None
    if env.type != BOOK_TYPE:
        from .messages import decode

        return decode(data, where)
    if env.v != BOOK_VERSION:
        raise DecodeError(f"unsupported version {env.v} of {env.type!r}", where)
    try:
        frame = _frame_decoder.decode(env.payload)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad {env.type} payload: {exc}", where) from None
    return env, LazyBook(frame)

"""Marks for unrealized PnL: the latest book mid per (venue, symbol), else the last fill price.

:class:`Marks` listens to ``md.book.*.*`` on core NATS (books are latest-wins data: a missed
one is replaced by the next) and keeps one mid per (venue, symbol) in memory. Nothing here is
booked: marks only value open positions for the summary and the equity history.

:func:`resolve_marks` answers, for the (venue, symbol) pairs that hold a position, the price
to value them at and where it came from: ``"book"`` (a live mid) or ``"last_fill"`` (the
ledger's most recent fill of that venue+symbol in the same scope, when no book was seen).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.engine import Connection

from arb_common.books import LazyBook, decode_book
from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.ledger import Fill
from arb_common.messages import Book, Envelope

logger = logging.getLogger(__name__)

TWO = Decimal(2)


class MarkSource(Protocol):
    def mid(self, venue: str, symbol: str) -> Decimal | None: ...


class Marks:
    """Latest mid per (venue, symbol) from the books on the bus.

    ``max_age_s``: a mid older than this (the feed stopped) is not used; ``None`` keeps it
    forever (the last fill price is the fallback either way).
    """

    def __init__(self, *, max_age_s: float | None = 60.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self._mids: dict[tuple[str, str], tuple[Decimal, int]] = {}
        self._max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)
        self._clock = clock

    async def start(self, bus: Bus) -> None:
        """Subscribe to every venue's books (``md.book.*.*``, with the bus prefix)."""
        # Only the best prices are read: the levels are never decoded (LazyBook).
        await bus.subscribe(bus.subjects.any("md.book.*.*"), self.on_book, where="marks",
                            decoder=decode_book)

    async def on_book(self, env: Envelope, payload: Any) -> None:
        if isinstance(payload, (Book, LazyBook)):
            self.update(payload)

    def update(self, book: Book | LazyBook) -> None:
        """Record the book's mid (ignored while either side is empty: no two-sided price)."""
        if isinstance(book, LazyBook):
            bid, ask = book.best_bid(), book.best_ask()
        else:
            bid = book.bids[0][0] if book.bids else None
            ask = book.asks[0][0] if book.asks else None
        if bid is None or ask is None:
            return
        mid = (bid + ask) / TWO
        self._mids[(book.venue, book.symbol)] = (mid, self._clock.monotonic_ns())

    def mid(self, venue: str, symbol: str) -> Decimal | None:
        entry = self._mids.get((venue, symbol))
        if entry is None:
            return None
        mid, seen = entry
        if self._max_age_ns is not None and self._clock.monotonic_ns() - seen > self._max_age_ns:
            return None
        return mid

    def __len__(self) -> int:
        return len(self._mids)


@dataclass(frozen=True)
class Mark:
    price: Decimal
    source: str  # "book" | "last_fill"


def last_fill_price(
    conn: Connection, venue: str, symbol: str, scope: Sequence[ColumnElement[bool]] = ()
) -> Decimal | None:
    """The price of the newest fill of (venue, symbol) within ``scope`` (index on symbol, ts)."""
    f = Fill
    stmt = (
        select(f.price).where(and_(f.venue == venue, f.symbol == symbol, *scope))
        .order_by(f.ts.desc(), f.id.desc()).limit(1)
    )  # fmt: skip
    return conn.execute(stmt).scalar_one_or_none()


def resolve_marks(
    conn: Connection,
    keys: Iterable[tuple[str, str]],
    live: MarkSource | None,
    scope: Sequence[ColumnElement[bool]] = (),
) -> dict[tuple[str, str], Mark]:
    """A mark per (venue, symbol): the live mid if there is one, else the last fill price.

    A key with neither (no book seen, no fill in scope) is left out.
    """
    out: dict[tuple[str, str], Mark] = {}
    for venue, symbol in sorted(set(keys)):
        mid = live.mid(venue, symbol) if live is not None else None
        if mid is not None:
            out[(venue, symbol)] = Mark(mid, "book")
            continue
        price = last_fill_price(conn, venue, symbol, scope)
        if price is not None:
            out[(venue, symbol)] = Mark(price, "last_fill")
    return out


def unrealized(quantity: Decimal, avg_price: Decimal, mark: Mark | None) -> Decimal:
    """``quantity × (mark − avg_price)`` (signed quantity: a short gains when the mark falls);
    0 when flat or when there is no mark at all."""
    if quantity == 0 or mark is None:
        return Decimal(0)
    return quantity * (mark.price - avg_price)

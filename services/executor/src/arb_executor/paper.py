"""Paper (and shadow) fills: a market order walks the latest book of the venue.

Books come from ``md.book.<venue>.<symbol>`` (core subscription, latest wins). A buy walks
the asks, a sell the bids, one fill per level touched, each charged the venue's taker fee in
the quote asset. Not enough depth -> partial fill with status ``EXPIRED`` (as Binance does for
a market order short of liquidity); below min quantity / min notional -> rejected. Trade ids
are ``paper-<coid>-<n>``. Orders are kept in memory so a redelivered intent finds them by
client order id instead of filling twice.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.messages import Book, Level, Side
from arb_common.money import ZERO, D, quantize

from .venue_client import MarketRules, OrderRejected, VenueFill, VenueOrder

logger = logging.getLogger(__name__)


class BookCache:
    """Latest book per (venue, symbol)."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], Book] = {}

    def update(self, book: Book) -> None:
        key = (book.venue, book.symbol)
        cur = self._books.get(key)
        if cur is None or book.seq >= cur.seq:
            self._books[key] = book

    def get(self, venue: str, symbol: str) -> Book | None:
        return self._books.get((venue, symbol))

    async def on_book(self, _env: Any, book: Book) -> None:
        self.update(book)


def walk_book(levels: list[Level], quantity: Decimal) -> list[tuple[Decimal, Decimal]]:
    """Consume ``quantity`` from best-first ``levels``: [(price, qty), ...] actually taken."""
    taken: list[tuple[Decimal, Decimal]] = []
    left = quantity
    for price, size in levels:
        if left <= 0:
            break
        if size <= 0:
            continue
        q = min(size, left)
        taken.append((price, q))
        left -= q
    return taken


def fill_market_order(
    book: Book | None,
    *,
    side: Side,
    quantity: Decimal,
    coid: str,
    rules: MarketRules,
    taker_fee: Decimal,
    ts_ms: int,
) -> VenueOrder:
    """Simulated MARKET order against ``book``; raises :class:`OrderRejected` when refused."""
    if book is None:
        raise OrderRejected(f"no book for {rules.symbol}")
    if quantity < rules.min_qty or quantity <= 0:
        raise OrderRejected(f"Filter failure: LOT_SIZE (quantity {quantity} < {rules.min_qty})")
    levels = book.asks if side == "buy" else book.bids
    if not levels:
        raise OrderRejected("no liquidity")
    if quantity * levels[0][0] < rules.min_notional:
        raise OrderRejected(f"Filter failure: NOTIONAL (below {rules.min_notional})")
    taken = walk_book(levels, quantity)
    fills = [
        VenueFill(
            trade_id=f"paper-{coid}-{n}",
            quantity=q,
            price=p,
            fee=quantize(p * q * taker_fee),
            fee_asset=rules.quote,
            ts_ms=ts_ms,
        )
        for n, (p, q) in enumerate(taken, start=1)
    ]
    filled = sum((f.quantity for f in fills), ZERO)
    cost = sum((f.quantity * f.price for f in fills), ZERO)
    return VenueOrder(
        client_order_id=coid,
        status="FILLED" if filled == quantity else "EXPIRED",
        quantity=quantity,
        filled=filled,
        venue_order_id=f"paper-{coid}",
        avg_price=cost / filled if filled > 0 else None,
        fills=fills,
        ts_ms=ts_ms,
        side=side,
        symbol=rules.symbol,
    )


class PaperVenue:
    """Same interface as :class:`~arb_executor.venue_client.VenueClient`, never sends."""

    def __init__(
        self,
        venue: str,
        books: BookCache,
        *,
        taker_fee: str = "0.001",
        rules: dict[str, MarketRules] | None = None,
        default_rules: tuple[str, str, str] = ("0.00001", "0.00001", "5"),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.venue = venue
        self.books = books
        self.taker_fee = D(taker_fee)
        self._rules = dict(rules or {})
        self._default = default_rules
        self.clock = clock
        self.orders: dict[str, VenueOrder] = {}
        self.markets_loaded = True

    def rules(self, symbol: str) -> MarketRules:
        r = self._rules.get(symbol)
        if r is None:
            step, min_qty, min_notional = self._default
            base, _, quote = symbol.partition("-")
            r = MarketRules(symbol, D(step), D(min_qty), D(min_notional), base, quote)
        return r

    async def submit(self, symbol: str, side: Side, quantity: Decimal, coid: str) -> VenueOrder:
        if coid in self.orders:
            raise OrderRejected("Duplicate order sent.")
        order = fill_market_order(
            self.books.get(self.venue, symbol), side=side, quantity=quantity, coid=coid,
            rules=self.rules(symbol), taker_fee=self.taker_fee, ts_ms=self.clock.now_ms(),
        )
        self.orders[coid] = order
        return order

    async def query(self, symbol: str, coid: str) -> VenueOrder | None:
        return self.orders.get(coid)

    async def close(self) -> None:
        return None

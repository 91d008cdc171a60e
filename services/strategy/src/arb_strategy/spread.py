"""Executable spread: walk book depth for the order size, then net both venues' taker fees.

All Decimal. ``net_bps = (sell_vwap * (1 - fee_sell) - buy_vwap * (1 + fee_buy)) / buy_vwap``
in basis points: what one unit bought on the buy venue and sold on the sell venue earns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from arb_common.messages import Book, Level
from arb_common.money import BPS, ONE, ZERO


@dataclass(frozen=True)
class Quote:
    buy_venue: str
    sell_venue: str
    quantity: Decimal
    buy_price: Decimal  # VWAP walking the buy venue's asks
    sell_price: Decimal  # VWAP walking the sell venue's bids
    net_bps: Decimal
    buy_seq: int
    sell_seq: int
    origin_ts: int  # recv_ts of the newer of the two books, ns


def vwap(levels: Sequence[Level], qty: Decimal) -> Decimal | None:
    """Average price to take ``qty`` from ``levels`` (best first); None if depth is short."""
    if qty <= 0:
        raise ValueError(f"quantity must be positive, got {qty}")
    remaining = qty
    cost = ZERO
    for price, size in levels:
        take = min(size, remaining)
        cost += take * price
        remaining -= take
        if remaining == 0:
            return cost / qty
    return None


def net_spread_bps(buy_vwap: Decimal, sell_vwap: Decimal, buy_fee: Decimal,
                   sell_fee: Decimal) -> Decimal:
    return (sell_vwap * (ONE - sell_fee) - buy_vwap * (ONE + buy_fee)) / buy_vwap * BPS


def quote(
    buy_book: Book, sell_book: Book, qty: Decimal, fees: Mapping[str, Decimal]
) -> Quote | None:
    """Buy ``qty`` on ``buy_book``'s venue, sell it on ``sell_book``'s; None without depth."""
    buy = vwap(buy_book.asks, qty)
    sell = vwap(sell_book.bids, qty)
    if buy is None or sell is None or buy <= 0:
        return None
    net = net_spread_bps(buy, sell, fees[buy_book.venue], fees[sell_book.venue])
    return Quote(
        buy_venue=buy_book.venue,
        sell_venue=sell_book.venue,
        quantity=qty,
        buy_price=buy,
        sell_price=sell,
        net_bps=net,
        buy_seq=buy_book.seq,
        sell_seq=sell_book.seq,
        origin_ts=max(buy_book.recv_ts, sell_book.recv_ts),
    )


def best_price(book: Book, side: str) -> Decimal | None:
    """Best bid (``side="bids"``) or ask of ``book``; a :class:`~arb_common.books.LazyBook`
    answers without decoding its levels."""
    fast = getattr(book, "best_bid" if side == "bids" else "best_ask", None)
    if fast is not None:
        return fast()  # type: ignore[no-any-return]
    levels = book.bids if side == "bids" else book.asks
    return levels[0][0] if levels else None


def top_bound_bps(buy_book: Book, sell_book: Book, fees: Mapping[str, Decimal]) -> Decimal | None:
    """The net spread at the top of both books: an upper bound of :func:`quote`'s ``net_bps``
    for any quantity (walking deeper buys higher and sells lower). None: a side is empty."""
    buy = best_price(buy_book, "asks")
    sell = best_price(sell_book, "bids")
    if buy is None or sell is None or buy <= 0:
        return None
    return net_spread_bps(buy, sell, fees[buy_book.venue], fees[sell_book.venue])


def best_bound_bps(books: Mapping[str, Book], fees: Mapping[str, Decimal]) -> Decimal | None:
    """The highest :func:`top_bound_bps` over every ordered pair of venues."""
    best: Decimal | None = None
    for buy_venue, buy_book in books.items():
        if buy_venue not in fees:
            continue
        for sell_venue, sell_book in books.items():
            if sell_venue == buy_venue or sell_venue not in fees:
                continue
            bound = top_bound_bps(buy_book, sell_book, fees)
            if bound is not None and (best is None or bound > best):
                best = bound
    return best


def best_quote(books: Mapping[str, Book], qty: Decimal,
               fees: Mapping[str, Decimal]) -> Quote | None:
    """The best direction over every ordered pair of venues (ties: venue names order)."""
    best: Quote | None = None
    venues = sorted(v for v in books if v in fees)
    for buy_venue in venues:
        for sell_venue in venues:
            if buy_venue == sell_venue:
                continue
            q = quote(books[buy_venue], books[sell_venue], qty, fees)
            if q is not None and (best is None or q.net_bps > best.net_bps):
                best = q
    return best

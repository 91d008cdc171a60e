"""Executable spread: VWAP walking and fee-adjusted net bps, checked against hand arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arb_common.messages import Book
from arb_strategy.spread import best_quote, net_spread_bps, quote, vwap

T0 = 1_700_000_000_000_000_000


def lv(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in pairs]


def book(venue: str, bid: str, ask: str, *, seq: int = 1, qty: str = "10",
         symbol: str = "BTC-USDT", recv_ts: int = T0) -> Book:
    """A one-level-per-side book."""
    return Book(venue=venue, symbol=symbol, seq=seq, bids=lv((bid, qty)), asks=lv((ask, qty)),
                venue_ts=recv_ts // 1_000_000, recv_ts=recv_ts)


FEES = {"alpha": Decimal("0.001"), "beta": Decimal("0.001")}


def test_vwap_walks_into_the_second_level() -> None:
    # 1 @ 100 + 0.5 @ 101 = 150.5 for 1.5 -> 100.333...
    assert vwap(lv(("100", "1"), ("101", "1")), Decimal("1.5")) == Decimal("150.5") / Decimal("1.5")
    assert str(vwap(lv(("100", "1"), ("101", "1")), Decimal("1.5")))[:10] == "100.333333"


def test_vwap_exact_fill_of_the_top_level_and_whole_book() -> None:
    levels = lv(("100", "1"), ("101", "1"))
    assert vwap(levels, Decimal("1")) == Decimal("100")
    assert vwap(levels, Decimal("2")) == Decimal("100.5")


def test_insufficient_depth_means_no_price() -> None:
    assert vwap(lv(("100", "1"), ("101", "1")), Decimal("2.0001")) is None
    assert vwap([], Decimal("1")) is None
    with pytest.raises(ValueError):
        vwap(lv(("100", "1")), Decimal("0"))


def test_net_spread_subtracts_both_fees() -> None:
    # sell 101 * 0.999 = 100.899; buy 100 * 1.001 = 100.1; (0.799 / 100) * 1e4 = 79.9 bps
    assert net_spread_bps(Decimal("100"), Decimal("101"), Decimal("0.001"),
                          Decimal("0.001")) == Decimal("79.9")
    # no fees: (100.05 - 100) / 100 = 5 bps
    assert net_spread_bps(Decimal("100"), Decimal("100.05"), Decimal(0), Decimal(0)) == Decimal(5)


def test_quote_uses_asks_of_the_buy_venue_and_bids_of_the_sell_venue() -> None:
    buy = Book(venue="alpha", symbol="BTC-USDT", seq=5, bids=lv(("99", "5")),
               asks=lv(("100", "1"), ("101", "1")), recv_ts=10)
    sell = Book(venue="beta", symbol="BTC-USDT", seq=9, bids=lv(("103", "1"), ("102", "1")),
                asks=lv(("104", "5")), recv_ts=20)
    q = quote(buy, sell, Decimal("1.5"), {"alpha": Decimal(0), "beta": Decimal("0.002")})
    assert q is not None
    assert q.buy_price == Decimal("150.5") / Decimal("1.5")
    assert q.sell_price == Decimal("154") / Decimal("1.5")  # 103 + 0.5 * 102
    expected = (q.sell_price * Decimal("0.998") - q.buy_price) / q.buy_price * 10_000
    assert q.net_bps == expected
    assert (q.buy_seq, q.sell_seq, q.origin_ts) == (5, 9, 20)


def test_best_quote_picks_the_profitable_direction() -> None:
    books = {"alpha": book("alpha", "100.0", "100.1"), "beta": book("beta", "100.6", "100.7")}
    q = best_quote(books, Decimal("1"), FEES)
    assert q is not None and (q.buy_venue, q.sell_venue) == ("alpha", "beta")
    # (100.6 * 0.999 - 100.1 * 1.001) / 100.1 * 1e4
    sell, buy = Decimal("100.6") * Decimal("0.999"), Decimal("100.1") * Decimal("1.001")
    assert q.net_bps == (sell - buy) / Decimal("100.1") * 10_000
    assert best_quote({"alpha": books["alpha"]}, Decimal("1"), FEES) is None
    assert best_quote(books, Decimal("11"), FEES) is None  # 10 per level only

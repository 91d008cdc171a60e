"""The top-of-book bound: books that cannot change a decision skip the depth walk, and the
decisions are exactly those of walking every book (random books, both engines side by side)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

import arb_strategy.engine as engine_mod
from arb_common.books import decode_book
from arb_common.clock import ManualClock
from arb_common.messages import Book, encode
from arb_strategy.engine import Engine, EngineConfig
from arb_strategy.risk_guard import RiskGuard
from arb_strategy.spread import best_bound_bps, best_quote, quote, top_bound_bps

T0 = 1_700_000_000_000_000_000
FEES = {"alpha": Decimal("0.001"), "beta": Decimal("0.00075")}
QTY = Decimal("0.7")
INF = Decimal("Infinity")


def rand_book(rng: random.Random, venue: str, mid: float, seq: int, recv_ts: int) -> Book:
    half = rng.uniform(0.01, 0.6)
    bids = [(Decimal(f"{mid - half - 0.05 * i:.2f}"), Decimal(f"{rng.uniform(0.05, 0.5):.3f}"))
            for i in range(rng.randint(0, 6))]
    asks = [(Decimal(f"{mid + half + 0.05 * i:.2f}"), Decimal(f"{rng.uniform(0.05, 0.5):.3f}"))
            for i in range(rng.randint(0, 6))]
    return Book(venue=venue, symbol="BTC-USDT", seq=seq, bids=bids, asks=asks, recv_ts=recv_ts)


def test_the_bound_is_never_below_the_walked_spread() -> None:
    rng = random.Random(7)
    for n in range(2000):
        a = rand_book(rng, "alpha", 100 + rng.uniform(-1, 1), n, T0)
        b = rand_book(rng, "beta", 100 + rng.uniform(-1, 1), n, T0)
        for buy, sell in ((a, b), (b, a)):
            q = quote(buy, sell, QTY, FEES)
            bound = top_bound_bps(buy, sell, FEES)
            if q is not None:
                assert bound is not None and bound >= q.net_bps
        best = best_quote({"alpha": a, "beta": b}, QTY, FEES)
        bound = best_bound_bps({"alpha": a, "beta": b}, FEES)
        if best is not None:
            assert bound is not None and bound >= best.net_bps


def _engine(clock: ManualClock, sample_s: float) -> Engine:
    guard = RiskGuard(daily_loss_limit=Decimal("1000"), clock=clock,
                      default_exposure_cap=Decimal("100000"))
    cfg = EngineConfig(order_qty={"BTC-USDT": QTY}, session="s", min_spread_bps=Decimal("8"),
                       close_spread_bps=Decimal("-2"), max_hold_s=3.0, cooldown_s=0.5,
                       spread_sample_s=sample_s)
    return Engine(cfg, FEES, guard, clock)


def test_decisions_equal_walking_every_book_lazy_books_included(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: no bound (every book walked) and the gauge walked on every book; the
    engine under test has both shortcuts and reads LazyBooks off the wire."""
    rng = random.Random(11)
    clock = ManualClock(T0)
    ref, fast = _engine(clock, 0.0), _engine(clock, 0.25)
    opens = closes = 0
    spread = 0.0
    for n in range(6000):
        clock.advance(0.01)
        spread += rng.uniform(-0.2, 0.2) - spread * 0.02
        venue = ("alpha", "beta")[n % 2]
        mid = 100 + (spread if venue == "beta" else 0.0)
        bk = rand_book(rng, venue, mid, n, clock.now_ns())
        wire = encode(bk, msg_id=f"b{n}", source="t", session="s", mode="paper", ts=1)
        with monkeypatch.context() as m:
            m.setattr(engine_mod, "best_bound_bps", lambda *_: INF)
            m.setattr(engine_mod, "top_bound_bps", lambda *_: INF)
            d_ref = ref.on_book(bk)
        d_fast = fast.on_book(decode_book(wire)[1])
        assert d_fast.intents == d_ref.intents, n
        assert d_fast.blocks == d_ref.blocks, n
        if d_fast.spread_bps is not None:
            assert d_fast.spread_bps == d_ref.spread_bps
        opens += sum(i.action == "open" for i in d_ref.intents)
        closes += sum(i.action == "close" for i in d_ref.intents)
        for i in d_ref.intents:  # both engines learn the same outcome: fully filled
            for engine in (ref, fast):
                engine.published(i)
    assert opens > 5 and closes > 5, (opens, closes)  # the walk really ran both ways


def test_the_gauge_is_still_walked_every_sample_period() -> None:
    clock = ManualClock(T0)
    engine = _engine(clock, 0.25)
    flat = Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[(Decimal("99.9"), Decimal(1))],
                asks=[(Decimal("100.1"), Decimal(1))], recv_ts=T0)
    other = Book(venue="beta", symbol="BTC-USDT", seq=2, bids=[(Decimal("99.9"), Decimal(1))],
                 asks=[(Decimal("100.1"), Decimal(1))], recv_ts=T0)
    assert engine.on_book(flat).spread_bps is None  # one venue: no spread at all
    assert engine.on_book(other).spread_bps is not None  # two venues: walked
    assert engine.on_book(other).spread_bps is None  # within 250 ms: skipped
    clock.advance(0.3)
    assert engine.on_book(other).spread_bps is not None

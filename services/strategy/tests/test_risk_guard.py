"""RiskGuard: daily loss limit with UTC-midnight reset, exposure cap, exact state round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arb_common.clock import ManualClock
from arb_strategy.risk_guard import DAY_NS, RiskGuard

# 2023-11-14 23:00:00 UTC
LATE_EVENING = (1_700_000_000 // 86_400 * 86_400 + 23 * 3600) * 1_000_000_000


def guard(clock: ManualClock | None = None) -> RiskGuard:
    return RiskGuard(daily_loss_limit=Decimal("100"), clock=clock or ManualClock(LATE_EVENING),
                     exposure_caps={"BTC-USDT": Decimal("1000")},
                     default_exposure_cap=Decimal("500"))


def test_daily_loss_limit_blocks_opens_until_utc_midnight() -> None:
    clock = ManualClock(LATE_EVENING)
    g = guard(clock)
    g.record_trade_pnl("BTC-USDT", Decimal("-60"))
    assert g.allow_open("BTC-USDT", Decimal("10")) == (True, "")
    g.record_trade_pnl("ETH-USDT", Decimal("-40.5"))
    ok, reason = g.allow_open("SOL-USDT", Decimal("10"))
    assert not ok and reason.startswith("daily_loss_limit")
    assert g.daily_loss() == Decimal("100.5")
    clock.advance(3599)
    assert not g.allow_open("BTC-USDT", Decimal("10"))[0]
    clock.advance(1)  # 00:00:00 UTC
    assert g.allow_open("BTC-USDT", Decimal("10")) == (True, "")
    assert g.daily_pnl == 0 and g.realized["ETH-USDT"] == Decimal("-40.5")


def test_exposure_cap_counts_the_larger_of_long_and_short_inventory() -> None:
    g = guard()
    g.record_fill("BTC-USDT", "alpha", "buy", Decimal("0.01"), Decimal("60000"))  # long 600
    g.record_fill("BTC-USDT", "beta", "sell", Decimal("0.01"), Decimal("60100"))  # short 601
    assert g.exposure("BTC-USDT") == Decimal("601")
    assert g.allow_open("BTC-USDT", Decimal("399"))[0]
    ok, reason = g.allow_open("BTC-USDT", Decimal("400"))
    assert not ok and reason.startswith("exposure_cap")
    g.record_fill("BTC-USDT", "alpha", "sell", Decimal("0.01"), Decimal("60050"))
    g.record_fill("BTC-USDT", "beta", "buy", Decimal("0.01"), Decimal("60060"))
    assert g.exposure("BTC-USDT") == 0
    assert not g.allow_open("ETH-USDT", Decimal("501"))[0]  # default cap
    with pytest.raises(ValueError):
        g.record_fill("BTC-USDT", "alpha", "hold", Decimal(1), Decimal(1))


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=8,
                       min_value=-10**6, max_value=10**6)


@given(pnls=st.lists(st.tuples(st.sampled_from(["BTC-USDT", "ETH-USDT"]), decimals),
                     max_size=5),
       fills=st.lists(st.tuples(st.sampled_from(["alpha", "beta"]),
                                st.sampled_from(["buy", "sell"]),
                                decimals.map(abs), decimals.map(abs)), max_size=6))
def test_state_round_trips_exactly(pnls, fills) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock(LATE_EVENING)
    g = guard(clock)
    for symbol, pnl in pnls:
        g.record_trade_pnl(symbol, pnl)
    for venue, side, qty, price in fills:
        g.record_fill("BTC-USDT", venue, side, qty, price)
    state = g.get_state()
    h = guard(clock)
    h.restore_state(state)
    assert h.get_state() == state
    assert (h.daily_pnl, h.realized, h.positions, h.prices) == (
        g.daily_pnl, g.realized, g.positions, g.prices)
    assert all(isinstance(v, str) for v in state["realized"].values())


def test_restored_state_from_yesterday_resets_on_first_check() -> None:
    clock = ManualClock(LATE_EVENING)
    g = guard(clock)
    g.record_trade_pnl("BTC-USDT", Decimal("-150"))
    state = g.get_state()
    clock.advance(ns=DAY_NS)
    h = guard(clock)
    h.restore_state(state)
    assert h.allow_open("BTC-USDT", Decimal("1")) == (True, "")

"""Average-cost accounting, hand-computed and property-checked."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arb_common.positions import PositionState, apply_fill, fee_in_quote

D = Decimal


def test_buy_then_sell_realizes_spread_minus_both_fees() -> None:
    p = apply_fill(PositionState(), side="buy", quantity=D(1), price=D(100), fee_quote=D("0.1"))
    assert (p.quantity, p.avg_price, p.realized_pnl) == (D(1), D(100), D("-0.1"))
    p = apply_fill(p, side="sell", quantity=D(1), price=D(110), fee_quote=D("0.11"))
    assert p.quantity == 0 and p.avg_price == 0
    assert p.realized_pnl == D("9.79")
    assert p.fees == D("0.21")


def test_adding_averages_the_entry_price_and_partial_close_keeps_it() -> None:
    p = apply_fill(PositionState(), side="buy", quantity=D(1), price=D(100), fee_quote=None)
    p = apply_fill(p, side="buy", quantity=D(3), price=D(120), fee_quote=None)
    assert p.avg_price == D(115)  # (100 + 360) / 4
    p = apply_fill(p, side="sell", quantity=D(2), price=D(130), fee_quote=None)
    assert (p.quantity, p.avg_price, p.realized_pnl) == (D(2), D(115), D(30))


def test_short_then_flip_through_zero_opens_at_the_fill_price() -> None:
    p = apply_fill(PositionState(), side="sell", quantity=D(2), price=D(50), fee_quote=None)
    assert (p.quantity, p.avg_price) == (D(-2), D(50))
    p = apply_fill(p, side="buy", quantity=D(3), price=D(40), fee_quote=None)
    # closes 2 short at 40 (+20), opens 1 long at 40
    assert (p.quantity, p.avg_price, p.realized_pnl) == (D(1), D(40), D(20))


def test_base_asset_fee_is_valued_at_the_fill_price_other_assets_are_not() -> None:
    assert fee_in_quote("BTC-USDT", D("0.001"), "BTC", D(100)) == D("0.100")
    assert fee_in_quote("BTC-USDT", D("0.1"), "USDT", D(100)) == D("0.1")
    assert fee_in_quote("BTC-USDT", D("0.1"), "BNB", D(100)) is None


def test_invalid_fill_is_refused() -> None:
    with pytest.raises(ValueError):
        apply_fill(PositionState(), side="buy", quantity=D(0), price=D(1), fee_quote=None)


prices = st.decimals(min_value=D("0.01"), max_value=D(100000), places=2)
qtys = st.decimals(min_value=D("0.001"), max_value=D(100), places=3)


@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]), qtys, prices), min_size=1,
                max_size=20), prices)
def test_flattening_realizes_exactly_the_cash_flow(
    fills: list[tuple[str, Decimal, Decimal]], exit_price: Decimal
) -> None:
    """Without fees, once flat, realized PnL equals sells minus buys in quote."""
    p = PositionState()
    cash = D(0)
    for side, q, px in fills:
        p = apply_fill(p, side=side, quantity=q, price=px, fee_quote=None)
        cash += q * px if side == "sell" else -q * px
    if p.quantity != 0:
        side = "sell" if p.quantity > 0 else "buy"
        q = abs(p.quantity)
        cash += q * exit_price if side == "sell" else -q * exit_price
        p = apply_fill(p, side=side, quantity=q, price=exit_price, fee_quote=None)
    assert p.quantity == 0
    assert abs(p.realized_pnl - cash) < D("1e-12")

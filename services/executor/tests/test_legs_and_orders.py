"""Client order ids, leg sizing and the order state machine."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal as D

import pytest

from arb_common.errors import InvariantViolation
from arb_common.messages import Intent
from arb_executor.legs import client_order_id, plan_legs, reason_label
from arb_executor.order_machine import OrderMachine, OrderState
from arb_executor.venue_client import MarketRules


def intent(qty: str = "0.0123456", price: str = "50000") -> Intent:
    return Intent(intent_id="T1:open", trade_id="T1", symbol="BTC-USDT", action="open",
                  buy_venue="alpha", sell_venue="beta", quantity=D(qty), buy_price=D(price),
                  sell_price=D(price), net_spread_bps=D("5"))


def rules(step: str = "0.00001", min_notional: str = "5") -> MarketRules:
    return MarketRules("BTC-USDT", D(step), D(step), D(min_notional), "BTC", "USDT")


def test_client_order_id_is_deterministic_and_binance_safe() -> None:
    a = client_order_id("T1:open", "buy")
    assert a == client_order_id("T1:open", "buy")
    assert a == "a" + hashlib.sha1(b"T1:open:buy").hexdigest()[:30]
    assert a != client_order_id("T1:open", "sell")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,36}", a)
    assert len(a) == 31


def test_legs_are_sized_to_the_coarser_lot_step() -> None:
    legs, reason = plan_legs(intent(), rules("0.00001"), rules("0.001"))
    assert reason == ""
    assert [leg.quantity for leg in legs] == [D("0.012"), D("0.012")]
    assert [leg.leg for leg in legs] == ["buy", "sell"]
    assert [leg.venue for leg in legs] == ["alpha", "beta"]


def test_below_min_notional_is_not_tradable() -> None:
    _, reason = plan_legs(intent("0.0001"), rules(), rules(min_notional="10"))
    assert "min notional" in reason
    assert reason_label(reason) == "min_notional"


def test_below_lot_step_is_not_tradable() -> None:
    _, reason = plan_legs(intent("0.0000001"), rules(), rules())
    assert "min quantity" in reason


def machine() -> OrderMachine:
    return OrderMachine(OrderState("alpha", "BTC-USDT", "c1", "buy", D("1")))


def test_order_lifecycle_new_submitted_acked_partial_filled() -> None:
    m = machine()
    m.transition("SUBMITTED")
    m.transition("ACKED", venue_order_id="9")
    m.transition("PARTIALLY_FILLED", filled=D("0.4"))
    m.transition("FILLED", filled=D("1"))
    assert m.history == ["NEW", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "FILLED"]
    assert m.state.venue_order_id == "9"


def test_unknown_resolves_to_a_venue_state() -> None:
    m = machine()
    m.transition("SUBMITTED")
    m.transition("UNKNOWN", reason="RequestTimeout")
    m.transition("FILLED", filled=D("1"))
    assert m.is_terminal


@pytest.mark.parametrize("steps", [
    [("FILLED", "1"), ("ACKED", "1")],          # terminal never moves
    [("SUBMITTED", "0"), ("PARTIALLY_FILLED", "0.5"), ("PARTIALLY_FILLED", "0.2")],  # shrinks
    [("SUBMITTED", "0"), ("FILLED", "0.5")],    # FILLED must be complete
    [("SUBMITTED", "0"), ("PARTIALLY_FILLED", "2")],  # over-fill
    [("SUBMITTED", "0"), ("ACKED", "0"), ("SUBMITTED", "0")],  # backwards
])
def test_illegal_transitions_are_refused_and_state_kept(steps: list[tuple[str, str]]) -> None:
    m = machine()
    with pytest.raises(InvariantViolation):
        for status, filled in steps:
            m.transition(status, filled=D(filled))  # type: ignore[arg-type]
    assert m.history[-1] == m.status

from __future__ import annotations

from decimal import Decimal

import pytest

from arb_common.keyspace import Keyspace
from arb_common.money import D, bps, floor_to_step, to_str


def test_keys_follow_the_contract_and_modes_never_share_a_prefix() -> None:
    live = Keyspace("live", "s1")
    paper = Keyspace("paper", "s1")
    assert live.key("position", "BTC-USDT", "alpha") == "arb:live:s1:position:BTC-USDT:alpha"
    assert not paper.key("position", "BTC-USDT", "alpha").startswith(live.mode_pattern()[:-1])
    assert Keyspace.ttl("position") is None and Keyspace.ttl("heartbeat")


def test_key_parts_cannot_inject_separators() -> None:
    with pytest.raises(ValueError):
        Keyspace("live", "s:1").key("position")
    with pytest.raises(ValueError):
        Keyspace("live", "s1").key("pos*")


def test_decimal_helpers() -> None:
    assert D("0.1") + D("0.2") == Decimal("0.3")
    with pytest.raises(TypeError):
        D(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        D("NaN")
    assert floor_to_step(Decimal("0.123456"), Decimal("0.001")) == Decimal("0.123")
    assert to_str(Decimal("1.2300")) == "1.23" and to_str(Decimal("100")) == "100"
    assert bps(Decimal("1"), Decimal("100")) == Decimal("100")

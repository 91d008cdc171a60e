"""Per-trade PnL from fills, fees in quote and base, idempotent and complete only when both
closing legs have filled."""

from __future__ import annotations

from decimal import Decimal

from arb_common.messages import FillEvent
from arb_strategy.pnl import PnlTracker


def fill(n: int, venue: str, side: str, qty: str, price: str, action: str, fee: str = "0",
         fee_asset: str = "USDT", trade_id: str = "T1") -> FillEvent:
    return FillEvent(venue=venue, symbol="BTC-USDT", client_order_id=f"c{n}",
                     venue_trade_id=str(n), side=side, quantity=Decimal(qty),  # type: ignore[arg-type]
                     price=Decimal(price), fee=Decimal(fee), fee_asset=fee_asset, ts=n,
                     intent_id=f"{trade_id}:{action}", trade_id=trade_id)


def test_round_trip_pnl_is_proceeds_minus_costs_minus_fees() -> None:
    t = PnlTracker()
    assert t.on_fill(fill(1, "alpha", "buy", "0.01", "60000", "open", "0.6")) is None
    assert t.on_fill(fill(2, "beta", "sell", "0.01", "60100", "open", "0.601")) is None
    assert t.on_fill(fill(3, "beta", "buy", "0.004", "60020", "close", "0.00001", "BTC")) is None
    assert t.on_fill(fill(3, "beta", "buy", "0.004", "60020", "close", "0.00001", "BTC")) is None
    assert t.on_fill(fill(4, "alpha", "sell", "0.01", "60030", "close", "0.6003")) is None
    result = t.on_fill(fill(5, "beta", "buy", "0.006", "60020", "close", "0.36012"))
    assert result is not None and result.trade_id == "T1" and result.quantity == Decimal("0.01")
    cash = (Decimal("601") + Decimal("600.3")) - (Decimal("600") + Decimal("600.2"))
    fees = Decimal("0.6") + Decimal("0.601") + Decimal("0.00001") * 60020 + Decimal("0.6003") \
        + Decimal("0.36012")
    assert result.pnl == cash - fees
    assert t.on_fill(fill(6, "beta", "buy", "0.001", "1", "close")) is None  # already done


def test_state_round_trips_open_trades_and_remembers_completed_ones() -> None:
    import orjson

    t = PnlTracker()
    t.on_fill(fill(1, "alpha", "buy", "0.01", "60000", "open", "0.6"))
    t.on_fill(fill(2, "beta", "sell", "0.01", "60100", "open", "0.601"))
    t.on_fill(fill(3, "beta", "buy", "0.01", "60020", "close", "0.6002"))
    t.on_fill(fill(4, "alpha", "buy", "0.2", "60000", "open", trade_id="T2"))
    done = t.on_fill(fill(5, "alpha", "sell", "0.01", "60030", "close", "0.6003"))
    assert done is not None
    fresh = PnlTracker()
    fresh.restore_state(orjson.loads(orjson.dumps(t.get_state())))
    assert fresh.get_state() == t.get_state()
    assert fresh.on_fill(fill(6, "beta", "buy", "0.001", "1", "close")) is None  # T1 done
    assert fresh.open_trades() == 1  # T2

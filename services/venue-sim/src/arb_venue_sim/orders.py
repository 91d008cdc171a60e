"""Orders, trades and their JSON forms (Binance wire and control API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from arb_common.money import ZERO, to_str

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
EIGHT = Decimal("0.00000001")


class BinanceError(Exception):
    """An error answered as ``{"code": ..., "msg": ...}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400, reason: str = "") -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.reason = reason or f"code{code}"  # bounded label for metrics
        self.counted = False  # already counted in arb_venue_sim_rejects_total

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def w8(value: Decimal) -> str:
    """Binance wire form of a price or quantity: fixed 8 decimals (``"0.00100000"``)."""
    return format(value.quantize(EIGHT), "f")


@dataclass
class Trade:
    trade_id: int
    order_id: int
    symbol: str  # wire form
    side: str  # BUY / SELL
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_maker: bool

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty

    def fill_json(self) -> dict[str, Any]:
        return {"price": w8(self.price), "qty": w8(self.qty), "commission": w8(self.commission),
                "commissionAsset": self.commission_asset, "tradeId": self.trade_id}

    def my_trade_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "id": self.trade_id, "orderId": self.order_id,
            "orderListId": -1, "price": w8(self.price), "qty": w8(self.qty),
            "quoteQty": w8(self.quote_qty), "commission": w8(self.commission),
            "commissionAsset": self.commission_asset, "time": self.time,
            "isBuyer": self.side == "BUY", "isMaker": self.is_maker, "isBestMatch": True,
        }


@dataclass
class Order:
    order_id: int | None  # None: rejected before reaching the book
    client_order_id: str
    symbol: str  # wire form
    pair: str  # our form, BTC-USDT
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    fills: list[Trade] = field(default_factory=list)
    external: bool = False
    reject_reason: str = ""
    locked_asset: str = ""
    locked: Decimal = ZERO

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def add_fill(self, trade: Trade) -> None:
        self.fills.append(trade)
        self.executed_qty += trade.qty
        self.cum_quote += trade.quote_qty
        self.update_time = trade.time

    # ------------------------------------------------------------ Binance wire
    def _core(self) -> dict[str, Any]:
        return {
            "price": w8(self.price), "origQty": w8(self.orig_qty),
            "executedQty": w8(self.executed_qty), "origQuoteOrderQty": w8(self.orig_quote_qty),
            "cummulativeQuoteQty": w8(self.cum_quote), "status": self.status,
            "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
        }

    def placement_json(self, resp_type: str) -> dict[str, Any]:
        """``POST /api/v3/order`` answer for ``newOrderRespType`` ACK / RESULT / FULL."""
        out: dict[str, Any] = {"symbol": self.symbol, "orderId": self.order_id,
                               "orderListId": -1, "clientOrderId": self.client_order_id,
                               "transactTime": self.update_time}
        if resp_type == "ACK":
            return out
        out.update(self._core())
        out["workingTime"] = self.time
        out["selfTradePreventionMode"] = "NONE"
        if resp_type == "FULL":
            out["fills"] = [t.fill_json() for t in self.fills]
        return out

    def query_json(self) -> dict[str, Any]:
        """``GET /api/v3/order`` and ``/openOrders`` element."""
        core = self._core()
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_order_id, "price": core["price"],
            "origQty": core["origQty"], "executedQty": core["executedQty"],
            "cummulativeQuoteQty": core["cummulativeQuoteQty"], "status": self.status,
            "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
            "stopPrice": w8(ZERO), "icebergQty": w8(ZERO), "time": self.time,
            "updateTime": self.update_time, "isWorking": True, "workingTime": self.time,
            "origQuoteOrderQty": core["origQuoteOrderQty"], "selfTradePreventionMode": "NONE",
        }

    def cancel_json(self, cancel_client_id: str) -> dict[str, Any]:
        """``DELETE /api/v3/order`` answer."""
        out: dict[str, Any] = {"symbol": self.symbol, "origClientOrderId": self.client_order_id,
                               "orderId": self.order_id, "orderListId": -1,
                               "clientOrderId": cancel_client_id,
                               "transactTime": self.update_time}
        out.update(self._core())
        out["selfTradePreventionMode"] = "NONE"
        return out

    # ------------------------------------------------------------ control API
    def record_json(self) -> dict[str, Any]:
        """Control API record: our symbol form, lower-case side, Decimals as strings."""
        return {
            "client_order_id": self.client_order_id,
            "venue_order_id": None if self.order_id is None else str(self.order_id),
            "symbol": self.pair, "side": self.side.lower(), "type": self.type,
            "time_in_force": self.time_in_force,
            "price": None if self.type == "MARKET" else to_str(self.price),
            "quantity": to_str(self.orig_qty), "filled_quantity": to_str(self.executed_qty),
            "quote_quantity": to_str(self.cum_quote), "status": self.status,
            "external": self.external, "reject_reason": self.reject_reason or None,
            "created_ms": self.time, "updated_ms": self.update_time,
            "fills": [
                {"trade_id": str(t.trade_id), "quantity": to_str(t.qty),
                 "price": to_str(t.price), "fee": to_str(t.commission),
                 "fee_asset": t.commission_asset, "is_maker": t.is_maker, "ts_ms": t.time}
                for t in self.fills
            ],
        }

"""Per-trade realized PnL from fills.

A trade (``trade_id``) is complete once closing fills exist on both sides and the quantity
bought equals the quantity sold over all its fills. Its PnL is the sell proceeds minus the buy
costs minus fees in the quote asset (fees charged in the base asset are valued at the fill
price; fees in any other asset are not counted and logged).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

from arb_common.messages import FillEvent
from arb_common.money import ZERO

logger = logging.getLogger(__name__)


@dataclass
class _Trade:
    symbol: str
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    close_bought: Decimal = ZERO
    close_sold: Decimal = ZERO
    cash: Decimal = ZERO  # sell proceeds - buy costs - fees (quote)
    fill_ids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class TradeResult:
    trade_id: str
    symbol: str
    pnl: Decimal
    quantity: Decimal


class PnlTracker:
    def __init__(self, max_trades: int = 10_000) -> None:
        self._open: dict[str, _Trade] = {}
        self._done: OrderedDict[str, Decimal] = OrderedDict()
        self._max = max_trades

    def on_fill(self, fill: FillEvent) -> TradeResult | None:
        """Account one fill; returns the trade's result the first time it completes."""
        if not fill.trade_id or fill.trade_id in self._done:
            return None
        trade = self._open.setdefault(fill.trade_id, _Trade(fill.symbol))
        key = f"{fill.venue}:{fill.venue_trade_id}"
        if key in trade.fill_ids:
            return None
        trade.fill_ids.add(key)
        closing = fill.intent_id.endswith(":close")
        notional = fill.quantity * fill.price
        if fill.side == "buy":
            trade.bought += fill.quantity
            trade.cash -= notional
            if closing:
                trade.close_bought += fill.quantity
        else:
            trade.sold += fill.quantity
            trade.cash += notional
            if closing:
                trade.close_sold += fill.quantity
        trade.cash -= self._fee_in_quote(fill)
        if trade.close_bought > 0 and trade.close_sold > 0 and trade.bought == trade.sold:
            return self._complete(fill.trade_id, trade)
        return None

    def _complete(self, trade_id: str, trade: _Trade) -> TradeResult:
        del self._open[trade_id]
        self._done[trade_id] = trade.cash
        while len(self._done) > self._max:
            self._done.popitem(last=False)
        return TradeResult(trade_id, trade.symbol, trade.cash, trade.bought - trade.close_bought)

    @staticmethod
    def _fee_in_quote(fill: FillEvent) -> Decimal:
        base, _, quote_asset = fill.symbol.partition("-")
        if fill.fee == 0 or fill.fee_asset == quote_asset:
            return fill.fee
        if fill.fee_asset == base:
            return fill.fee * fill.price
        logger.warning("fee in another asset not counted symbol=%s fee=%s asset=%s trade_id=%s",
                       fill.symbol, fill.fee, fill.fee_asset, fill.trade_id)
        return ZERO

    def open_trades(self) -> int:
        return len(self._open)

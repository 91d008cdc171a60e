"""Per-trade realized PnL from fills.

A trade (``trade_id``) is complete once the quantity bought equals the quantity sold over
all its fills (hedges included) and every venue it traded on is flat again (closed, or an
open whose legs the executor unwound). Closing fills on both sides are not enough: a close
whose hedge failed over to the other venue has them, and leaves the trade's positions on
both venues until the strategy closes that leftover (its fills complete the trade). A
trade restored from a state that did not record the venues completes on closing fills on
both sides, as before. Its PnL is the sell
proceeds minus the buy costs minus fees in the quote asset (fees charged in the base asset
are valued at the fill price; fees in any other asset are not counted and logged).

``get_state()`` / ``restore_state()`` round-trip the open trades' partial accounting exactly
and the most recent completed trade ids (so a fill replayed after a restart never reopens a
trade that already completed).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from arb_common.messages import FillEvent
from arb_common.money import ZERO, D

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
    # base bought - sold per venue; None: restored from a state that did not record it
    venue_net: dict[str, Decimal] | None = field(default_factory=dict)


@dataclass(frozen=True)
class TradeResult:
    trade_id: str
    symbol: str
    pnl: Decimal
    quantity: Decimal


class PnlTracker:
    SNAPSHOT_DONE = 1_000  # completed trade ids kept in a snapshot (the newest)

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
        if trade.venue_net is not None:
            signed = fill.quantity if fill.side == "buy" else -fill.quantity
            trade.venue_net[fill.venue] = trade.venue_net.get(fill.venue, ZERO) + signed
        if trade.bought != trade.sold:
            return None
        if trade.venue_net is None:  # restored without venues: closing fills both sides
            done = trade.close_bought > 0 and trade.close_sold > 0
        else:
            done = all(q == 0 for q in trade.venue_net.values())
        return self._complete(fill.trade_id, trade) if done else None

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

    # ------------------------------------------------------------ snapshots
    def get_state(self) -> dict[str, Any]:
        done = list(self._done)[-self.SNAPSHOT_DONE:]
        return {
            "v": 1,
            "open": {tid: _trade_state(t) for tid, t in sorted(self._open.items())},
            "done": done,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        if state.get("v") != 1:
            raise ValueError(f"unsupported pnl state version {state.get('v')!r}")
        self._open = {
            tid: _Trade(
                symbol=str(raw["symbol"]), bought=D(raw["bought"]), sold=D(raw["sold"]),
                close_bought=D(raw["close_bought"]), close_sold=D(raw["close_sold"]),
                cash=D(raw["cash"]), fill_ids=set(raw["fill_ids"]),
                venue_net=({v: D(q) for v, q in raw["venue_net"].items()}
                           if "venue_net" in raw else None),
            )
            for tid, raw in state["open"].items()
        }
        # The PnL of a completed trade is not needed any more, only that it completed.
        self._done = OrderedDict((str(tid), ZERO) for tid in state["done"])


def _trade_state(t: _Trade) -> dict[str, Any]:
    return {
        "symbol": t.symbol, "bought": str(t.bought), "sold": str(t.sold),
        "close_bought": str(t.close_bought), "close_sold": str(t.close_sold),
        "cash": str(t.cash), "fill_ids": sorted(t.fill_ids),
        **({"venue_net": {v: str(q) for v, q in sorted(t.venue_net.items())}}
           if t.venue_net is not None else {}),
    }

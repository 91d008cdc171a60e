"""Trade statistics of closed round trips: per symbol and for the portfolio.

Fed with each completed trade's PnL (:class:`arb_strategy.pnl.TradeResult`) in the order the
trades complete, so a replay after a restart reproduces them exactly. Snapshots carry them as
:class:`arb_common.snapshots.SymbolMetrics` / :class:`~arb_common.snapshots.PortfolioMetrics`.

A trade wins when its PnL is > 0 and loses when it is < 0 (a zero trade is neither).
``peak`` is the highest cumulative realized PnL seen (starting at 0) and ``max_drawdown`` the
largest drop from a peak to a later point (>= 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from arb_common.money import ZERO
from arb_common.snapshots import PortfolioMetrics, SymbolMetrics


@dataclass
class _Symbol:
    realized_pnl: Decimal = ZERO
    trades: int = 0
    wins: int = 0
    losses: int = 0
    gross_profit: Decimal = ZERO
    gross_loss: Decimal = ZERO  # positive number


class TradeStats:
    def __init__(self) -> None:
        self._symbols: dict[str, _Symbol] = {}
        self.realized_pnl = ZERO
        self.trades = 0
        self.wins = 0
        self.losses = 0
        self.peak = ZERO
        self.max_drawdown = ZERO

    def record(self, symbol: str, pnl: Decimal) -> None:
        s = self._symbols.setdefault(symbol, _Symbol())
        s.realized_pnl += pnl
        s.trades += 1
        self.realized_pnl += pnl
        self.trades += 1
        if pnl > 0:
            s.wins += 1
            s.gross_profit += pnl
            self.wins += 1
        elif pnl < 0:
            s.losses += 1
            s.gross_loss -= pnl
            self.losses += 1
        self.peak = max(self.peak, self.realized_pnl)
        self.max_drawdown = max(self.max_drawdown, self.peak - self.realized_pnl)

    # ------------------------------------------------------------ snapshots
    def metrics(self) -> list[SymbolMetrics]:
        return [
            SymbolMetrics(symbol=sym, realized_pnl=s.realized_pnl, trades=s.trades, wins=s.wins,
                          losses=s.losses, gross_profit=s.gross_profit, gross_loss=s.gross_loss)
            for sym, s in sorted(self._symbols.items())
        ]

    def portfolio(self) -> PortfolioMetrics:
        return PortfolioMetrics(realized_pnl=self.realized_pnl, trades=self.trades,
                                wins=self.wins, losses=self.losses, peak=self.peak,
                                max_drawdown=self.max_drawdown)

    def restore(self, metrics: Iterable[SymbolMetrics], portfolio: PortfolioMetrics) -> None:
        self._symbols = {
            m.symbol: _Symbol(realized_pnl=m.realized_pnl, trades=m.trades, wins=m.wins,
                              losses=m.losses, gross_profit=m.gross_profit,
                              gross_loss=m.gross_loss)
            for m in metrics
        }
        self.realized_pnl = portfolio.realized_pnl
        self.trades = portfolio.trades
        self.wins = portfolio.wins
        self.losses = portfolio.losses
        self.peak = portfolio.peak
        self.max_drawdown = portfolio.max_drawdown

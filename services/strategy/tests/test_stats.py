"""Trade statistics: wins, losses, gross profit/loss, peak and max drawdown of cumulative
realized PnL (hand-computed)."""

from __future__ import annotations

from decimal import Decimal

from arb_strategy.stats import TradeStats


def test_statistics_of_a_sequence_of_trades() -> None:
    s = TradeStats()
    for symbol, pnl in [("BTC-USDT", "5"), ("ETH-USDT", "-2"), ("BTC-USDT", "-4.5"),
                        ("ETH-USDT", "0"), ("BTC-USDT", "3")]:
        s.record(symbol, Decimal(pnl))
    # cumulative: 5, 3, -1.5, -1.5, 1.5 -> peak 5, max drawdown 6.5
    p = s.portfolio()
    assert (p.realized_pnl, p.trades, p.wins, p.losses) == (Decimal("1.5"), 5, 2, 2)
    assert (p.peak, p.max_drawdown) == (Decimal("5"), Decimal("6.5"))
    btc, eth = s.metrics()
    assert (btc.symbol, btc.realized_pnl, btc.trades, btc.wins, btc.losses) == (
        "BTC-USDT", Decimal("3.5"), 3, 2, 1)
    assert (btc.gross_profit, btc.gross_loss) == (Decimal("8"), Decimal("4.5"))
    assert (eth.trades, eth.wins, eth.losses, eth.gross_loss) == (2, 0, 1, Decimal("2"))


def test_restore_continues_exactly() -> None:
    a, b = TradeStats(), TradeStats()
    a.record("BTC-USDT", Decimal("2"))
    a.record("BTC-USDT", Decimal("-3"))
    b.restore(a.metrics(), a.portfolio())
    for s in (a, b):
        s.record("SOL-USDT", Decimal("-1"))
    assert (b.metrics(), b.portfolio()) == (a.metrics(), a.portfolio())
    assert b.portfolio().max_drawdown == Decimal("4")

"""Average-cost position accounting (pure: no I/O), shared by state (ledger) and strategy.

One position per (mode, session, venue, symbol). ``quantity`` is signed (short < 0);
``avg_price`` is the average entry price of the open quantity (0 when flat);
``realized_pnl`` is in the quote asset and already net of fees.

Fees:
- quote-asset fee (``USDT`` on ``BTC-USDT``): subtracted from ``realized_pnl`` as is;
- base-asset fee (``BTC`` on ``BTC-USDT``, e.g. Binance buys without BNB discount): valued in
  the quote asset at the fill's price (``fee * price``) and subtracted from ``realized_pnl``.
  The position quantity stays the *traded* quantity, so both legs of an arbitrage net to
  zero; the venue wallet holds ``fee`` less base than the position says, which is the
  reconciler's balance-drift business, not a position change;
- any other asset (e.g. ``BNB``): cannot be valued without a price, so it is not booked in
  ``realized_pnl`` (it is still stored on the fill row); :func:`fee_in_quote` returns None.

Example (hand-computed, tested): buy 1 @ 100 fee 0.1 USDT, sell 1 @ 110 fee 0.11 USDT
→ realized = (110 - 100) * 1 - 0.1 - 0.11 = 9.79.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Protocol

ZERO = Decimal(0)


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTC-USDT`` → (``BTC``, ``USDT``)."""
    base, sep, quote = symbol.partition("-")
    if not sep or not base or not quote:
        raise ValueError(f"symbol {symbol!r} is not BASE-QUOTE")
    return base, quote


def fee_in_quote(symbol: str, fee: Decimal, fee_asset: str, price: Decimal) -> Decimal | None:
    """The fee in the symbol's quote asset, or None when it cannot be valued."""
    base, quote = split_symbol(symbol)
    asset = fee_asset.upper()
    if fee == 0 or asset == quote:
        return fee
    if asset == base:
        return fee * price
    return None


@dataclass(frozen=True)
class PositionState:
    quantity: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO  # fees booked into realized_pnl, in the quote asset


def apply_fill(
    pos: PositionState,
    *,
    side: str,
    quantity: Decimal,
    price: Decimal,
    fee_quote: Decimal | None,
) -> PositionState:
    """The position after one fill (``fee_quote`` from :func:`fee_in_quote`)."""
    if quantity <= 0:
        raise ValueError(f"fill quantity must be positive, got {quantity}")
    if side not in ("buy", "sell"):
        raise ValueError(f"fill side must be buy or sell, got {side!r}")
    delta = quantity if side == "buy" else -quantity
    qty, avg, realized = pos.quantity, pos.avg_price, pos.realized_pnl

    if qty == 0 or (qty > 0) == (delta > 0):
        # Opening or adding: weighted average entry price.
        new_qty = qty + delta
        avg = (abs(qty) * avg + quantity * price) / abs(new_qty)
    else:
        # Reducing, closing, or flipping through zero.
        closing = min(quantity, abs(qty))
        direction = Decimal(1) if qty > 0 else Decimal(-1)
        realized += closing * (price - avg) * direction
        new_qty = qty + delta
        if new_qty == 0:
            avg = ZERO
        elif (new_qty > 0) != (qty > 0):
            avg = price  # the remainder opened a new position at this fill's price

    fee = fee_quote or ZERO
    return PositionState(
        quantity=new_qty,
        avg_price=avg,
        realized_pnl=realized - fee,
        fees=pos.fees + fee,
    )


# NUMERIC(38,18): the ledger's scale for money and quantities. Quantizing needs a 38-digit
# context: in the default 28-digit one, any value >= 1e10 has no room for 18 decimals.
LEDGER_SCALE = Decimal("1e-18")
_LEDGER_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)


def quantize_position(s: PositionState) -> PositionState:
    """Round to NUMERIC(38,18) (half even), so memory, Redis and the database hold the same
    numbers."""
    return PositionState(*(v.quantize(LEDGER_SCALE, context=_LEDGER_CONTEXT) for v in
                           (s.quantity, s.avg_price, s.realized_pnl, s.fees)))


class FillLike(Protocol):
    """What :func:`replay` reads of a fill (a ledger row, a ``FillEvent``)."""

    @property
    def venue(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def fee(self) -> Decimal: ...
    @property
    def fee_asset(self) -> str: ...


# (venue, symbol) -> (position, fills applied)
Replayed = dict[tuple[str, str], tuple[PositionState, int]]


def replay(fills: Iterable[FillLike]) -> Replayed:
    """Average-cost positions of ``fills`` applied in order, each step rounded to
    NUMERIC(38,18) (:func:`quantize_position`), with the number of fills per position."""
    out: Replayed = {}
    for f in fills:
        key = (f.venue, f.symbol)
        state, count = out.get(key, (PositionState(), 0))
        state = apply_fill(state, side=f.side, quantity=f.quantity, price=f.price,
                           fee_quote=fee_in_quote(f.symbol, f.fee, f.fee_asset, f.price))
        out[key] = (quantize_position(state), count + 1)
    return out

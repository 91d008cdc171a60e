"""Average-cost positions per (venue, symbol) from the fills the strategy applied.

The same accounting as the ledger (:mod:`arb_common.positions`), rounded after every fill to
NUMERIC(38,18) with the same function (``quantize_position``): the state service validates a
snapshot by replaying the ledger's fills up to its ``exec_seq`` (``arb_common.positions.replay``)
and the ledger itself rounds per fill, so the three agree to the last digit. ``fills`` counts
the fills applied to each position.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from arb_common.messages import FillEvent
from arb_common.positions import PositionState, apply_fill, fee_in_quote, quantize_position
from arb_common.snapshots import PositionSnap

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # venue, symbol


class PositionBook:
    def __init__(self) -> None:
        self.states: dict[Key, PositionState] = {}
        self.fills: dict[Key, int] = {}

    def apply(self, fill: FillEvent) -> PositionState:
        key = (fill.venue, fill.symbol)
        fee_q = fee_in_quote(fill.symbol, fill.fee, fill.fee_asset, fill.price)
        if fee_q is None:
            logger.warning("fee not valued venue=%s symbol=%s fee=%s fee_asset=%s trade=%s",
                           fill.venue, fill.symbol, fill.fee, fill.fee_asset,
                           fill.venue_trade_id)
        state = apply_fill(self.states.get(key, PositionState()), side=fill.side,
                           quantity=fill.quantity, price=fill.price, fee_quote=fee_q)
        self.states[key] = state = quantize_position(state)
        self.fills[key] = self.fills.get(key, 0) + 1
        return state

    def snaps(self) -> list[PositionSnap]:
        return [
            PositionSnap(venue=venue, symbol=symbol, quantity=s.quantity, avg_price=s.avg_price,
                         realized_pnl=s.realized_pnl, fees=s.fees, fills=self.fills[(venue,
                                                                                     symbol)])
            for (venue, symbol), s in sorted(self.states.items())
        ]

    def restore(self, snaps: Iterable[PositionSnap]) -> None:
        self.states = {}
        self.fills = {}
        for p in snaps:
            key = (p.venue, p.symbol)
            self.states[key] = PositionState(p.quantity, p.avg_price, p.realized_pnl, p.fees)
            self.fills[key] = p.fills

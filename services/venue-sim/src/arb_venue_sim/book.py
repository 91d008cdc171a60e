"""One simulated L2 order book (a symbol on a venue) with Binance-style update ids.

Prices live on a grid of ``level_step`` (a multiple of the tick size); each grid point near
the mid is either empty or holds a quantity (whole lot-size steps). About 70 % of grid points
are occupied, so consecutive levels are one to a few grid steps apart. Each tick the book
re-centres on the new mid (levels that end up on the wrong side are removed, new grid points
are drawn), a couple of levels per side are redrawn (liquidity churn and replenishment), and
the side is extended until it holds ``depth`` non-empty levels.

Every change of a level's quantity consumes one update id; an event carries the range
``[U, u]`` of the ids it consumed, so events of one book are contiguous (``U == prev u + 1``)
and ``update_id`` (the REST ``lastUpdateId``) comes from the same sequence.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

from .config import SymbolSpec

Level = tuple[Decimal, Decimal]  # (price, quantity); quantity 0 removes the level
OCCUPANCY = 0.7
CHURN_PER_SIDE = 2


@dataclass
class DepthEvent:
    """Changes of one book: absolute quantities per price, ids ``first_id..last_id``."""

    venue: str
    symbol: str  # wire form, BTCUSDT
    first_id: int
    last_id: int
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)


class Book:
    def __init__(self, venue: str, spec: SymbolSpec, depth: int, seed: int,
                 start_update_id: int = 1000) -> None:
        self.venue = venue
        self.spec = spec
        self.depth = depth
        self._rng = random.Random(f"{seed}:book:{venue}:{spec.symbol}")
        self._step_f = float(spec.level_step)
        self._base_units = max(1, int(spec.level_qty / spec.step_size))
        self.bids: dict[int, int] = {}  # grid index -> quantity in lot steps (0: known empty)
        self.asks: dict[int, int] = {}
        self.update_id = start_update_id

    # ------------------------------------------------------------------ conversions
    def price_of(self, idx: int) -> Decimal:
        return (Decimal(idx) * self.spec.level_step).quantize(self.spec.tick_size)

    def qty_of(self, units: int) -> Decimal:
        return Decimal(units) * self.spec.step_size

    def _idx(self, price: Decimal) -> int:
        return int(price / self.spec.level_step)

    # ------------------------------------------------------------------ reading
    def levels(self, side: str, limit: int | None = None) -> list[Level]:
        """Non-empty levels, best first; ``side`` is ``"bids"`` or ``"asks"``."""
        state = self.bids if side == "bids" else self.asks
        keys = sorted((k for k, v in state.items() if v > 0), reverse=side == "bids")
        if limit is not None:
            keys = keys[:limit]
        return [(self.price_of(k), self.qty_of(state[k])) for k in keys]

    def best(self, side: str) -> Level | None:
        top = self.levels(side, 1)
        return top[0] if top else None

    # ------------------------------------------------------------------ changing
    def regenerate(self, mid: float) -> DepthEvent | None:
        """Move the book to a new mid price; the event holds what changed."""
        before_b, before_a = _visible(self.bids), _visible(self.asks)
        top_bid = max(1, math.ceil(mid / self._step_f) - 1)
        for state in (self.bids, self.asks):
            for _ in range(CHURN_PER_SIDE):
                if state:
                    idx = self._rng.choice(list(state))
                    state[idx] = self._draw()
        self._fill_side(self.bids, top_bid, -1)
        self._fill_side(self.asks, top_bid + 1, 1)
        return self._event(before_b, before_a)

    def take(self, side: str, fills: list[Level]) -> DepthEvent | None:
        """Remove liquidity a taker consumed: ``fills`` are (price, quantity) on ``side``."""
        state = self.bids if side == "bids" else self.asks
        before_b, before_a = _visible(self.bids), _visible(self.asks)
        for price, qty in fills:
            idx = self._idx(price)
            units = int(qty / self.spec.step_size)
            left = state.get(idx, 0) - units
            if left < 0:
                raise ValueError(f"taking {qty} at {price} from {side} but only "
                                 f"{self.qty_of(state.get(idx, 0))} rests there")
            state[idx] = left
        return self._event(before_b, before_a)

    def _draw(self) -> int:
        if self._rng.random() > OCCUPANCY:
            return 0
        return max(1, int(self._base_units * (0.2 + self._rng.expovariate(1.0))))

    def _fill_side(self, state: dict[int, int], start: int, direction: int) -> None:
        for idx in [k for k in state if (k - start) * direction < 0]:
            del state[idx]  # now on the wrong side of the mid
        idx, count = start, 0
        while count < self.depth and idx > 0:
            if idx not in state:
                state[idx] = self._draw()
            if state[idx] > 0:
                count += 1
            idx += direction
        last = idx - direction
        for k in [k for k in state if (k - last) * direction > 0]:
            del state[k]  # beyond the window

    def _event(self, before_b: dict[int, int], before_a: dict[int, int]) -> DepthEvent | None:
        bids = _changes(before_b, _visible(self.bids), descending=True)
        asks = _changes(before_a, _visible(self.asks), descending=False)
        count = len(bids) + len(asks)
        if count == 0:
            return None
        first = self.update_id + 1
        self.update_id += count
        return DepthEvent(
            venue=self.venue, symbol=self.spec.wire, first_id=first, last_id=self.update_id,
            bids=[(self.price_of(i), self.qty_of(u)) for i, u in bids],
            asks=[(self.price_of(i), self.qty_of(u)) for i, u in asks],
        )


def _visible(state: dict[int, int]) -> dict[int, int]:
    return {k: v for k, v in state.items() if v > 0}


def _changes(before: dict[int, int], after: dict[int, int], *,
             descending: bool) -> list[tuple[int, int]]:
    keys = sorted(set(before) | set(after), reverse=descending)
    return [(k, after.get(k, 0)) for k in keys if before.get(k, 0) != after.get(k, 0)]

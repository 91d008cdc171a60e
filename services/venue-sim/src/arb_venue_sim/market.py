"""The simulated markets: one price model per symbol, one book per (venue, symbol)."""

from __future__ import annotations

from collections.abc import Iterable

from .book import Book, DepthEvent
from .config import SimSettings, SymbolSpec, symbol_spec
from .pricing import PriceModel, PriceParams


class Market:
    """Steps every book in simulated time; deterministic for a given seed and tick sequence."""

    def __init__(self, venues: list[str], symbols: list[str], *, seed: int = 42,
                 depth: int = 25, params: PriceParams | None = None) -> None:
        self.venues = list(venues)
        self.specs: dict[str, SymbolSpec] = {s: symbol_spec(s) for s in symbols}
        self.by_wire: dict[str, SymbolSpec] = {sp.wire: sp for sp in self.specs.values()}
        params = params or PriceParams()
        self.models = {
            s: PriceModel(s, float(sp.start_price), self.venues, params, seed)
            for s, sp in self.specs.items()
        }
        self.books: dict[tuple[str, str], Book] = {
            (v, sp.wire): Book(v, sp, depth, seed) for v in self.venues
            for sp in self.specs.values()
        }
        self.ticks = 0
        self.step(0.0)  # every book starts full

    @classmethod
    def from_settings(cls, settings: SimSettings) -> Market:
        params = PriceParams(
            walk_vol_bps=settings.sim_walk_vol_bps, ou_theta=settings.sim_ou_theta,
            ou_vol_bps=settings.sim_ou_vol_bps, kick_rate_per_s=settings.sim_kick_rate_per_s,
            kick_min_bps=settings.sim_kick_min_bps, kick_max_bps=settings.sim_kick_max_bps,
        )
        return cls(settings.venue_list, settings.symbol_list, seed=settings.sim_seed,
                   depth=settings.sim_book_depth, params=params)

    def book(self, venue: str, wire_symbol: str) -> Book:
        return self.books[(venue, wire_symbol)]

    def step(self, dt: float, symbols: Iterable[str] | None = None) -> list[DepthEvent]:
        """Advance the price models of ``symbols`` (default: every one) by ``dt`` seconds and
        move their books."""
        self.ticks += 1
        events: list[DepthEvent] = []
        chosen = self.models if symbols is None else {s: self.models[s] for s in symbols}
        for symbol, model in chosen.items():
            if dt > 0:
                model.step(dt)
            wire = self.specs[symbol].wire
            for venue in self.venues:
                event = self.books[(venue, wire)].regenerate(model.mid(venue))
                if event is not None:
                    events.append(event)
        return events

"""Mid-price model: one common random walk per symbol plus a per-venue deviation.

For symbol ``s`` on venue ``v`` the mid is ``common_s * (1 + dev_{s,v})`` where

* ``common_s`` is a geometric random walk: each tick of ``dt`` seconds multiplies it by
  ``exp(walk_vol * sqrt(dt) * N(0, 1))`` (``ARB_SIM_WALK_VOL_BPS``, default 2 bps/sqrt(s),
  about 6 % a day: crypto-like);
* ``dev_{s,v}`` is an Ornstein-Uhlenbeck process, ``d dev = -theta * dev * dt +
  ou_vol * dW`` (``ARB_SIM_OU_THETA`` 0.5/s, i.e. a half-life of ~1.4 s;
  ``ARB_SIM_OU_VOL_BPS`` 3 bps/sqrt(s), a stationary std of ~3 bps);
* plus **kicks**: a Poisson process per symbol (``ARB_SIM_KICK_RATE_PER_S`` 0.25/s, one every
  ~4 s per symbol, so one every ~1.3 s over three symbols) that moves one random venue's
  deviation by a random sign times ``U(ARB_SIM_KICK_MIN_BPS, ARB_SIM_KICK_MAX_BPS)`` =
  30..60 bps. A kick opens a cross-venue spread of 30..60 bps, above the 2 x 10 bps taker
  fees + 5 bps buffer = 25 bps, that then reverts (stays above 25 bps for ~0.4..1.7 s).

Deviations are clamped to +-300 bps. Everything here is a float signal: prices become
``Decimal`` on the book grid (``book.py``). The generator is seeded (``ARB_SIM_SEED``): the
same seed and the same sequence of ticks give the same prices.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

BPS = 1e-4
MAX_DEV = 300 * BPS


@dataclass(frozen=True)
class PriceParams:
    walk_vol_bps: float = 2.0
    ou_theta: float = 0.5
    ou_vol_bps: float = 3.0
    kick_rate_per_s: float = 0.25
    kick_min_bps: float = 30.0
    kick_max_bps: float = 60.0


class PriceModel:
    """Mid prices of one symbol on every venue."""

    def __init__(self, symbol: str, start: float, venues: list[str], params: PriceParams,
                 seed: int) -> None:
        self.symbol = symbol
        self.venues = list(venues)
        self.params = params
        self.common = start
        self.dev: dict[str, float] = {v: 0.0 for v in venues}
        self._rng = random.Random(f"{seed}:price:{symbol}")
        self.kicks = 0

    def step(self, dt: float) -> None:
        p = self.params
        rng = self._rng
        self.common *= math.exp(p.walk_vol_bps * BPS * math.sqrt(dt) * rng.gauss(0.0, 1.0))
        for venue in self.venues:
            dev = self.dev[venue]
            dev += -p.ou_theta * dev * dt + p.ou_vol_bps * BPS * math.sqrt(dt) * rng.gauss(0, 1)
            self.dev[venue] = dev
        if self.venues and rng.random() < p.kick_rate_per_s * dt:
            venue = rng.choice(self.venues)
            size = rng.uniform(p.kick_min_bps, p.kick_max_bps) * BPS
            self.dev[venue] += size if rng.random() < 0.5 else -size
            self.kicks += 1
        for venue in self.venues:
            self.dev[venue] = max(-MAX_DEV, min(MAX_DEV, self.dev[venue]))

    def mid(self, venue: str) -> float:
        return self.common * (1.0 + self.dev[venue])

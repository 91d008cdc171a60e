"""The strategy's Redis hot state (CONTRACTS.md, "Redis hot state keys").

- ``guard:<symbol>:state`` — hash ``exposure``, ``realized``, ``positions`` (JSON venue →
  base quantity); no TTL.
- ``guard:_:daily`` — hash ``day`` (UTC day number), ``daily_pnl``; no TTL.
- ``cooldown:<symbol>:until`` — the cooldown's end (ns), expiring at that moment.
- ``heartbeat:strategy:ts`` and the marker ``session:strategy:synced`` are the mirror's.

Rendered from memory when flushed (:class:`arb_common.hot.HotMirror`), for the tokens
marked since the last flush: a symbol, or :data:`DAILY`.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from arb_common.hot import HotEntry
from arb_common.keyspace import Keyspace
from arb_common.money import ZERO, to_str

from .engine import Engine
from .risk_guard import RiskGuard

DAILY = "_"
NS_PER_MS = 1_000_000


class StrategyHot:
    def __init__(self, keyspace: Keyspace, engine: Engine, guard: RiskGuard) -> None:
        self.ks = keyspace
        self.engine = engine
        self.guard = guard
        self._cooldowns: dict[str, int] = {}  # as last rendered (unchanged: not rewritten)

    def render(self, tokens: set[str] | None) -> Iterable[HotEntry]:
        if tokens is None:  # everything (a rewrite)
            self._cooldowns.clear()
            symbols = set(self.engine.symbols) | set(self.guard.positions) | set(
                self.guard.realized)
            daily = True
        else:
            symbols = tokens - {DAILY}
            daily = DAILY in tokens
        out = [e for s in sorted(symbols) for e in self._symbol(s)]
        if daily:
            out.append(HotEntry(self.ks.key("guard", DAILY, "daily"), fields={
                "day": str(self.guard.day), "daily_pnl": to_str(self.guard.daily_pnl)},
                ttl_s=Keyspace.ttl("guard")))
        return out

    def _symbol(self, symbol: str) -> list[HotEntry]:
        g = self.guard
        positions = {v: to_str(q) for v, q in sorted(g.positions.get(symbol, {}).items())}
        out = [HotEntry(self.ks.key("guard", symbol, "state"), fields={
            "exposure": to_str(g.exposure(symbol)),
            "realized": to_str(g.realized.get(symbol, ZERO)),
            "positions": orjson.dumps(positions).decode(),
        }, ttl_s=Keyspace.ttl("guard"))]
        st = self.engine.symbols.get(symbol)
        if st is not None and self._cooldowns.get(symbol) != st.cooldown_until_ns:
            until = self._cooldowns[symbol] = st.cooldown_until_ns
            key = self.ks.key("cooldown", symbol, "until")
            out.append(HotEntry(key, value=str(until), expire_at_ms=until // NS_PER_MS)
                       if until > 0 else HotEntry(key))
        return out

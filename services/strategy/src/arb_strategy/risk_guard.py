"""RiskGuard: daily realized-loss limit and per-symbol exposure cap. Pure, clock-injected.

- Daily loss: realized PnL of the current UTC day (quote currency). When it is at or below
  ``-daily_loss_limit`` no new position opens until the next UTC midnight (of the injected
  clock), when the day's PnL resets.
- Exposure: per symbol, from fills, the larger of the long and the short inventory notional
  across venues (a hedged pair of N counts N; an unhedged leg of N counts N). An open of
  ``notional`` is refused when ``exposure + notional`` would exceed the cap.

``get_state()`` / ``restore_state()`` round-trip exactly (Decimals as strings) for snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from arb_common.clock import Clock
from arb_common.money import ZERO, D, to_str

DAY_NS = 86_400 * 1_000_000_000
DAILY_LOSS = "daily_loss_limit"
EXPOSURE = "exposure_cap"
UNHEDGED = "unhedged_exposure"


class RiskGuard:
    def __init__(
        self,
        *,
        daily_loss_limit: Decimal,
        clock: Clock,
        exposure_caps: Mapping[str, Decimal] | None = None,
        default_exposure_cap: Decimal = Decimal("5000"),
    ) -> None:
        if daily_loss_limit <= 0:
            raise ValueError("daily_loss_limit must be positive")
        self.daily_loss_limit = daily_loss_limit
        self.clock = clock
        self.exposure_caps = dict(exposure_caps or {})
        self.default_exposure_cap = default_exposure_cap
        self.day = self._today()
        self.daily_pnl = ZERO
        self.realized: dict[str, Decimal] = {}
        self.positions: dict[str, dict[str, Decimal]] = {}  # symbol -> venue -> base qty
        self.prices: dict[str, dict[str, Decimal]] = {}  # symbol -> venue -> last fill price
        # symbol -> why: exposure the executor could not hedge (RISK stream, not snapshot
        # state: rebuilt by replaying RISK at start); cleared by an operator (unblock).
        self.blocks: dict[str, str] = {}

    # ------------------------------------------------------------ checks
    def allow_open(self, symbol: str, notional: Decimal) -> tuple[bool, str]:
        """May a new position of ``notional`` (quote) open on ``symbol``? ``(ok, reason)``;
        a refusal's reason starts with its kind (``daily_loss_limit`` / ``exposure_cap``)."""
        self._roll_day()
        if symbol in self.blocks:
            return False, f"{UNHEDGED}: {self.blocks[symbol]}"
        if self.daily_pnl <= -self.daily_loss_limit:
            return False, (f"{DAILY_LOSS}: daily pnl {to_str(self.daily_pnl)} <= "
                           f"-{to_str(self.daily_loss_limit)}")
        cap = self.cap(symbol)
        exposure = self.exposure(symbol)
        if exposure + notional > cap:
            return False, (f"{EXPOSURE}: exposure {to_str(exposure)} + {to_str(notional)} > "
                           f"cap {to_str(cap)}")
        return True, ""

    def cap(self, symbol: str) -> Decimal:
        return self.exposure_caps.get(symbol, self.default_exposure_cap)

    def exposure(self, symbol: str) -> Decimal:
        long = short = ZERO
        prices = self.prices.get(symbol, {})
        for venue, qty in self.positions.get(symbol, {}).items():
            notional = qty * prices.get(venue, ZERO)
            if notional > 0:
                long += notional
            else:
                short -= notional
        return max(long, short)

    # ------------------------------------------------------------ updates
    def record_fill(self, symbol: str, venue: str, side: str, qty: Decimal, price: Decimal) -> None:
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {side!r}")
        signed = qty if side == "buy" else -qty
        venues = self.positions.setdefault(symbol, {})
        venues[venue] = venues.get(venue, ZERO) + signed
        self.prices.setdefault(symbol, {})[venue] = price

    def record_trade_pnl(self, symbol: str, pnl: Decimal, at_ns: int | None = None) -> None:
        """Book a closed trade. ``at_ns`` is when it closed (the event's time, default now):
        a replay after a restart then books it into the UTC day it really belongs to (a
        trade of a day already rolled over counts in ``realized`` only)."""
        if at_ns is None:
            self._roll_day()
            day = self.day
        else:
            day = at_ns // DAY_NS
            self._roll_day(max(day, self._today()))
        if day == self.day:
            self.daily_pnl += pnl
        self.realized[symbol] = self.realized.get(symbol, ZERO) + pnl

    def daily_loss(self) -> Decimal:
        self._roll_day()
        return -self.daily_pnl if self.daily_pnl < 0 else ZERO

    def _today(self) -> int:
        return self.clock.now_ns() // DAY_NS

    def _roll_day(self, today: int | None = None) -> None:
        today = self._today() if today is None else today
        if today > self.day:
            self.day = today
            self.daily_pnl = ZERO

    # ------------------------------------------------------------ snapshots
    def get_state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "day": self.day,
            "daily_pnl": str(self.daily_pnl),
            "realized": {s: str(v) for s, v in self.realized.items()},
            "positions": _strs(self.positions),
            "prices": _strs(self.prices),
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        if state.get("v") != 1:
            raise ValueError(f"unsupported risk guard state version {state.get('v')!r}")
        self.day = int(state["day"])
        self.daily_pnl = D(state["daily_pnl"])
        self.realized = {s: D(v) for s, v in state["realized"].items()}
        self.positions = {
            s: {v: D(q) for v, q in vs.items()} for s, vs in state["positions"].items()
        }
        self.prices = {s: {v: D(p) for v, p in vs.items()} for s, vs in state["prices"].items()}


def _strs(nested: Mapping[str, Mapping[str, Decimal]]) -> dict[str, dict[str, str]]:
    return {k: {k2: str(v) for k2, v in inner.items()} for k, inner in nested.items()}

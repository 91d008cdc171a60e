"""The dev account of one venue: free and locked balance per asset, exact Decimals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from arb_common.errors import InvariantViolation
from arb_common.money import ZERO, to_str


@dataclass
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


class Account:
    def __init__(self, start: dict[str, Decimal]) -> None:
        self.balances: dict[str, Balance] = {a: Balance(free=v) for a, v in start.items()}
        self.update_time = 0

    def get(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def free(self, asset: str) -> Decimal:
        return self.get(asset).free

    def credit(self, asset: str, amount: Decimal) -> None:
        self.get(asset).free += amount

    def debit(self, asset: str, amount: Decimal) -> None:
        self.get(asset).free -= amount

    def lock(self, asset: str, amount: Decimal) -> None:
        bal = self.get(asset)
        bal.free -= amount
        bal.locked += amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        bal = self.get(asset)
        bal.locked -= amount
        bal.free += amount

    def spend_locked(self, asset: str, amount: Decimal) -> None:
        self.get(asset).locked -= amount

    def check(self) -> None:
        """Crash loudly if any balance went negative (a matching-engine bug)."""
        for asset, bal in self.balances.items():
            if bal.free < 0 or bal.locked < 0:
                raise InvariantViolation(
                    f"negative balance asset={asset} free={bal.free} locked={bal.locked}")

    def binance_json(self, omit_zero: bool = False) -> list[dict[str, str]]:
        out = []
        for asset in sorted(self.balances):
            bal = self.balances[asset]
            if omit_zero and bal.free == 0 and bal.locked == 0:
                continue
            out.append({"asset": asset, "free": format(bal.free.quantize(Decimal("1e-8")), "f"),
                        "locked": format(bal.locked.quantize(Decimal("1e-8")), "f")})
        return out

    def control_json(self) -> dict[str, Any]:
        return {
            asset: {"free": to_str(b.free), "locked": to_str(b.locked),
                    "total": to_str(b.free + b.locked)}
            for asset, b in sorted(self.balances.items())
        }

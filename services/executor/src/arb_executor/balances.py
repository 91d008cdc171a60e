"""Free balances per venue, cached for the pre-send check (never a REST call on the hot path).

Refreshed from each venue every ``refresh_s`` (live: the signed account endpoint; paper and
shadow: the paper venue's own balances) and adjusted locally by every fill in between, so a
burst of intents does not spend the same balance twice. A venue whose balances were never
read is not capped (the venue's own answer decides); a failed refresh keeps the last values
and is counted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from arb_common.messages import Side
from arb_common.money import ZERO

logger = logging.getLogger(__name__)

REFRESH_ERRORS = Counter("arb_executor_balance_refresh_errors_total",
                         "Balance refreshes that failed", ["venue"])
FREE = Gauge("arb_executor_balance_free", "Free balance as last known", ["venue", "asset"])


class Balances:
    def __init__(self, venues: Mapping[str, Any], *, refresh_s: float = 5.0,
                 buy_buffer: Decimal = Decimal("0.005"), after_fill_s: float = 0.5) -> None:
        self.venues = venues
        self.refresh_s = refresh_s
        self.buy_buffer = buy_buffer  # a market buy may fill above the expected price
        self.after_fill_s = after_fill_s
        self.free: dict[str, dict[str, Decimal]] = {}
        self._soon: dict[str, asyncio.Task[None]] = {}  # venue -> its coalesced refresh

    def refresh_soon(self, venue: str) -> None:
        """Re-read ``venue`` ``after_fill_s`` from now (the fills are already applied
        locally); every request until then shares that one read, so a burst of intents does
        not put an account request (and ccxt's balance parsing) beside each of its orders."""
        if venue in self._soon:
            return
        task = asyncio.create_task(self._refresh_later(venue), name=f"balances:{venue}")
        self._soon[venue] = task

    async def _refresh_later(self, venue: str) -> None:
        try:
            await asyncio.sleep(self.after_fill_s)
        finally:
            self._soon.pop(venue, None)  # a request from now on schedules the next read
        await self.refresh(venue)

    async def close(self) -> None:
        tasks = list(self._soon.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def refresh(self, venue: str) -> None:
        tv = self.venues[venue]
        try:
            if hasattr(tv, "available"):  # paper venue: asset -> free
                got = tv.balances()
                raw = await got if inspect.isawaitable(got) else got
                free = {a: Decimal(v) for a, v in dict(raw).items()}
            else:  # live client: asset -> (free, locked)
                raw = await tv.balances()
                free = {a: fl[0] for a, fl in raw.items()}
        except Exception as exc:  # noqa: BLE001 - keep the last values; the venue decides
            REFRESH_ERRORS.labels(venue).inc()
            logger.warning("balance refresh failed venue=%s error=%r", venue, exc)
            return
        self.free[venue] = free
        for asset, value in free.items():
            FREE.labels(venue, asset).set(float(value))

    async def refresh_all(self) -> None:
        await asyncio.gather(*(self.refresh(v) for v in self.venues))

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.refresh_all()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.refresh_s)
            except TimeoutError:
                pass

    def max_quantity(self, venue: str, side: Side, base: str, quote: str, price: Decimal,
                     fee: Decimal) -> Decimal | None:
        """The most base quantity the free balance allows (None: balances not known)."""
        b = self.free.get(venue)
        if b is None:
            return None
        if side == "sell":
            return max(b.get(base, ZERO), ZERO)
        unit = price * (1 + fee) * (1 + self.buy_buffer)
        return max(b.get(quote, ZERO), ZERO) / unit if unit > 0 else None

    def apply_fill(self, venue: str, side: Side, base: str, quote: str, quantity: Decimal,
                   price: Decimal, fee: Decimal, fee_asset: str) -> None:
        b = self.free.get(venue)
        if b is None:
            return
        sign = 1 if side == "buy" else -1
        b[base] = b.get(base, ZERO) + sign * quantity
        b[quote] = b.get(quote, ZERO) - sign * quantity * price
        if fee_asset:
            b[fee_asset] = b.get(fee_asset, ZERO) - fee

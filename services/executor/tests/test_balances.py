"""Balance cache: fills adjust it at once; re-reads after fills are coalesced per venue."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from arb_executor.balances import Balances


class CountingAccount:
    """A live-client-shaped venue answering its account (asset -> (free, locked))."""

    def __init__(self) -> None:
        self.reads = 0
        self.free = {"USDT": (D("1000"), D("0")), "BTC": (D("1"), D("0"))}

    async def balances(self) -> dict[str, tuple[D, D]]:
        self.reads += 1
        return dict(self.free)


def test_fills_apply_locally_and_a_burst_of_refresh_requests_reads_once() -> None:
    async def run() -> None:
        acct = {"alpha": CountingAccount(), "beta": CountingAccount()}
        b = Balances(acct, after_fill_s=0.05)
        await b.refresh_all()
        assert acct["alpha"].reads == 1
        b.apply_fill("alpha", "buy", "BTC", "USDT", D("0.5"), D("100"), D("0.05"), "USDT")
        assert b.free["alpha"] == {"USDT": D("949.95"), "BTC": D("1.5")}
        for _ in range(20):  # 20 intents' worth of requests within the window
            b.refresh_soon("alpha")
            b.refresh_soon("beta")
        await asyncio.sleep(0.15)
        assert (acct["alpha"].reads, acct["beta"].reads) == (2, 2)
        assert b.free["alpha"]["BTC"] == D("1")  # the venue's answer replaced the estimate
        b.refresh_soon("alpha")  # a later request schedules the next read
        await b.close()  # cancelled before it ran
        await asyncio.sleep(0.1)
        assert acct["alpha"].reads == 2

    asyncio.run(run())

"""market-data (and strategy) against the real venue simulator (``arb_venue_sim``) run in-process
on ephemeral ports, over real NATS: every venue and symbol published, books identical to the
simulator's, sequence gaps (``ws_gap`` fault) resynced, dropped sockets (``drop_ws``) reconnected,
and the strategy fed with fresh books from both venues."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from prometheus_client import REGISTRY

from arb_common.bus import Bus
from arb_common.messages import Book, decode
from arb_common.testing import wait_until
from arb_market_data.app import MarketDataService
from arb_market_data.config import MarketDataSettings
from arb_strategy.app import StrategyService
from arb_strategy.config import StrategySettings
from arb_venue_sim.config import SimSettings
from arb_venue_sim.testing import RunningSim, running_simulator
from arb_venue_sim.venue import Simulator

pytestmark = pytest.mark.integration

SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


wait_for = partial(wait_until, timeout=15.0)


@dataclass
class Stack:
    sim: Simulator
    svc: MarketDataService
    bus: Bus
    latest: dict[tuple[str, str], Book]
    market_task: asyncio.Task[Any]


@pytest.fixture
async def stack(nats_url: str, bus_prefix: str, cleanup_streams: None) -> AsyncIterator[Stack]:
    settings = SimSettings(profile="dev", control_token=None, sim_seed=7, venues="alpha,beta",
                           symbols=",".join(SYMBOLS), http_host="127.0.0.1",
                           sim_book_updates_per_s=20)
    async with running_simulator(settings) as running:
        async for s in _with_market_data(running, nats_url, bus_prefix):
            yield s


async def _with_market_data(running: RunningSim, nats_url: str, bus_prefix: str
                            ) -> AsyncIterator[Stack]:
    venues = running.configs
    bus = Bus(nats_url, service="market-data", session="t", mode="paper", prefix=bus_prefix)
    await bus.connect()
    await bus.provision()
    settings = MarketDataSettings(nats_url=nats_url, bus_prefix=bus_prefix, venues="alpha,beta",
                                  symbols=",".join(SYMBOLS), reconnect_initial_s=0.05,
                                  reconnect_max_s=0.5, snapshot_retry_s=0.05)
    svc = MarketDataService(settings, bus, venues)
    latest: dict[tuple[str, str], Book] = {}

    async def on_book(msg: Any) -> None:
        book = decode(msg.data)[1]
        assert (msg.headers or {})["Nats-Msg-Id"] == f"book:{book.venue}:{book.symbol}:{book.seq}"
        latest[(book.venue, book.symbol)] = book

    await bus.nc.subscribe(bus.subjects.any("md.book.*.*"), cb=on_book)
    md_task = asyncio.create_task(svc.run())
    try:
        yield Stack(running.sim, svc, bus, latest, running.tasks["market"])
    finally:
        md_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await md_task
        await bus.close()


def assert_same_as_simulator(stack: Stack) -> None:
    for (venue, symbol), book in stack.latest.items():
        sim_book = stack.sim.market.book(venue, symbol.replace("-", ""))
        assert book.seq == sim_book.update_id, (venue, symbol)
        assert book.bids == sim_book.levels("bids", 20), (venue, symbol)
        assert book.asks == sim_book.levels("asks", 20), (venue, symbol)


async def pause_market_and_settle(stack: Stack) -> None:
    stack.market_task.cancel()
    await asyncio.sleep(0.6)  # the simulator flushes depth every 100 ms


async def test_books_for_every_venue_and_symbol_match_the_simulator(stack: Stack) -> None:
    await wait_for(lambda: len(stack.latest) == 6, what="books for 2 venues x 3 symbols")
    await wait_for(lambda: stack.svc.ready()[0], what="market-data ready")
    await pause_market_and_settle(stack)
    assert_same_as_simulator(stack)
    for book in stack.latest.values():
        assert book.bids[0][0] < book.asks[0][0] and len(book.bids) == 20


async def test_ws_gap_and_drop_faults_are_resynced_and_reconnected(stack: Stack) -> None:
    await wait_for(lambda: len(stack.latest) == 6, what="first books")
    gaps = sum(metric("arb_market_data_gaps_total", venue="alpha", symbol=s) for s in SYMBOLS)
    stack.sim.venues["alpha"].faults.add("ws_gap", 1.0, 0.25)
    await wait_for(lambda: sum(metric("arb_market_data_gaps_total", venue="alpha", symbol=s)
                               for s in SYMBOLS) > gaps, what="gap detected")
    reconnects = metric("arb_market_data_reconnects_total", venue="beta")
    stack.sim.venues["beta"].faults.add("drop_ws", None, 0.5)
    await wait_for(lambda: not stack.svc.feeds[1].connected, what="beta dropped")
    await wait_for(lambda: stack.svc.ready()[0], what="both venues back and fresh")
    assert metric("arb_market_data_reconnects_total", venue="beta") > reconnects
    await pause_market_and_settle(stack)
    assert_same_as_simulator(stack)


async def test_strategy_sees_fresh_books_from_both_venues(stack: Stack, nats_url: str,
                                                          bus_prefix: str) -> None:
    strat_bus = Bus(nats_url, service="strategy", session="t", mode="paper", prefix=bus_prefix)
    await strat_bus.connect()
    try:
        settings = StrategySettings(nats_url=nats_url, bus_prefix=bus_prefix,
                                    symbols=",".join(SYMBOLS))
        svc = StrategyService(settings, strat_bus,
                              {"alpha": Decimal("0.001"), "beta": Decimal("0.001")})
        await svc.start()
        await wait_for(lambda: svc.ready()[0], what="strategy ready")
        await wait_for(lambda: all(metric("arb_strategy_spread_bps", symbol=s) != 0
                                   for s in SYMBOLS), what="spread gauges")
    finally:
        await strat_bus.close()

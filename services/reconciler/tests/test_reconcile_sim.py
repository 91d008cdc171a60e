"""Reconciler against the real venue simulator (signed REST), real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from arb_common.bus import Bus
from arb_common.ledger import Balance, DiscrepancyRow, Order
from arb_common.messages import FillEvent, Intent, OrderEvent
from arb_common.testing import wait_until
from arb_executor.arbitrage import IntentExecutor
from arb_executor.gate import Gate
from arb_executor.legs import client_order_id
from arb_executor.testing import venue_clients
from arb_executor.venue_client import VenueClient
from arb_reconciler.app import VenueGate
from arb_reconciler.reconcile import Ledger, Reconciler
from arb_venue_sim.testing import RunningSim as SimHandle

from .test_reconcile import messages

pytestmark = pytest.mark.integration

OPEN_OURS = client_order_id("S1:open", "buy")
UNRECORDED = client_order_id("S2:open", "buy")
FILLED_UNKNOWN = client_order_id("S3:open", "buy")
NEVER_SENT = client_order_id("S4:open", "sell")


@pytest.fixture
async def clients(venue_sim: SimHandle) -> AsyncIterator[dict[str, VenueClient]]:
    async with venue_clients(venue_sim.configs, VenueClient, timeout_s=2.0) as out:
        yield out


def ledger_rows(url: str, rows: list[tuple[str, str]]) -> None:
    now = datetime.now(UTC)
    with Session(create_engine(url)) as s, s.begin():
        for coid, status in rows:
            s.add(Order(mode="live", session="s1", venue="alpha", symbol="BTC-USDT",
                        client_order_id=coid, side="buy", quantity=D("0.01"),
                        filled_quantity=D(0), status=status, created_at=now, updated_at=now))


async def test_startup_run_against_the_simulator_records_every_difference(
        bus: Bus, ledger_url: str, venue_sim: SimHandle, clients: dict[str, VenueClient]) -> None:
    ex = clients["alpha"].ex
    for coid in (OPEN_OURS, UNRECORDED, "web_1"):   # resting limit orders far below the market
        await ex.create_order("BTC/USDT", "limit", "buy", 0.01, 1000,
                              params={"clientOrderId": coid})
    await ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId":
                                                                     FILLED_UNKNOWN})
    ledger_rows(ledger_url, [(OPEN_OURS, "ACKED"), (FILLED_UNKNOWN, "UNKNOWN"),
                             (NEVER_SENT, "NEW")])
    ledger = Ledger(ledger_url, "live")
    gate = VenueGate("alpha", bus, Reconciler(bus, ledger, clients), interval_s=60,
                     retry_max_s=1)
    await asyncio.wait_for(gate.startup(), 20)
    assert gate.ready
    with Session(ledger.engine) as s:
        found = sorted((d.kind, d.client_order_id, d.resolution)
                       for d in s.scalars(select(DiscrepancyRow)))
        balances = {b.asset: b.free for b in s.scalars(select(Balance))}
    assert found == sorted([
        ("unknown_open_order", UNRECORDED, "recorded"),
        ("external_order", "web_1", "halted new entries (policy); acknowledge to resume"),
        ("stale_order", FILLED_UNKNOWN, "corrected: FILLED"),
        ("stale_order", NEVER_SENT, "waiting"),
    ])
    assert balances["BTC"] == D("10.01")  # 10 at start + the filled market buy
    execs = await messages(bus, "EXEC", "exec.>")
    filled = [e for e in execs if isinstance(e, OrderEvent)]
    assert [(e.client_order_id, e.status) for e in filled] == [(FILLED_UNKNOWN, "FILLED")]
    assert any(isinstance(e, FillEvent) for e in execs)
    ledger.close()


async def test_intent_waits_for_the_reconciler_then_trades_on_the_simulator(
        bus: Bus, ledger_url: str, venue_sim: SimHandle, clients: dict[str, VenueClient]) -> None:
    gate = Gate(["alpha", "beta"])
    await gate.start(bus)
    executor = IntentExecutor(bus, clients, gate)
    bus.consume(stream="STRAT", durable="executor-intents",
                filter_subject=bus.subjects.any("strat.intent.>"), handler=executor.handle,
                backoff=(0.2, 0.5, 1))
    intent = Intent(intent_id="G1:open", trade_id="G1", symbol="BTC-USDT", action="open",
                    buy_venue="alpha", sell_venue="beta", quantity=D("0.01"),
                    buy_price=D("60000"), sell_price=D("60000"), net_spread_bps=D("5"))
    await bus.publish(bus.subjects.intent("BTC-USDT"), intent, "intent:G1:open")
    await asyncio.sleep(1.0)
    coid = client_order_id("G1:open", "buy")
    assert coid not in [r["client_order_id"] for r in venue_sim.records("alpha")]

    ledger = Ledger(ledger_url, "live")
    rec = Reconciler(bus, ledger, clients)
    for v in ("alpha", "beta"):
        await VenueGate(v, bus, rec, interval_s=60, retry_max_s=1).startup()
    await wait_until(lambda: "G1:open" in executor.done, 10)
    assert [r["client_order_id"] for r in venue_sim.records("alpha")].count(coid) == 1
    ledger.close()

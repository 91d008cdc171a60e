"""The venue's trades and balances vs the ledger (arb_reconciler.audit), against the real
simulator (signed REST through ccxt), real PostgreSQL and NATS: missing fills recorded once,
external trades by policy, balance drift halting entries, stale orders canceled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from arb_common.bus import Bus
from arb_common.ledger import Order
from arb_common.messages import FillEvent, OrderEvent, VenueReady
from arb_executor.legs import client_order_id
from arb_executor.testing import venue_clients
from arb_reconciler.app import VenueGate
from arb_reconciler.audit import AuditPolicy
from arb_reconciler.reconcile import Ledger, Reconciler
from arb_reconciler.trades import AuditClient
from arb_venue_sim.matching import OrderRequest
from arb_venue_sim.testing import RunningSim

from .test_reconcile import messages

pytestmark = pytest.mark.integration

OURS = client_order_id("M1:open", "buy")


@pytest.fixture
async def clients(venue_sim: RunningSim) -> AsyncIterator[dict[str, AuditClient]]:
    async with venue_clients(venue_sim.configs, AuditClient, timeout_s=2.0) as out:
        yield out


def recon(bus: Bus, ledger: Ledger, clients: dict[str, AuditClient], **policy: Any
          ) -> Reconciler:
    policy.setdefault("missing_grace_s", 0.0)  # trades of this test are seconds old
    return Reconciler(bus, ledger, dict(clients), symbols=["BTC-USDT", "ETH-USDT"],
                      policy=AuditPolicy(**policy))


def external_trade(sim: RunningSim, venue: str = "alpha", qty: str = "0.002") -> None:
    """A manual market order on the venue, as ``POST /control/venues/{venue}/orders`` places."""
    sim.sim.venues[venue].engine.place(OrderRequest(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity=D(qty),
        client_order_id="manual-1", external=True))


def ledger_order(url: str, coid: str, status: str, *, venue_order_id: str | None = None,
                 filled: str = "0", age_s: float = 0) -> None:
    at = datetime.now(UTC) - timedelta(seconds=age_s)
    with Session(create_engine(url)) as s, s.begin():
        s.add(Order(mode="live", session="s1", venue="alpha", symbol="BTC-USDT",
                    client_order_id=coid, venue_order_id=venue_order_id, side="buy",
                    quantity=D("0.01"), filled_quantity=D(filled), status=status,
                    intent_id="M1:open", trade_id="M1", created_at=at, updated_at=at))


async def test_a_fill_the_ledger_lost_is_recorded_exactly_once_across_reruns(
        bus: Bus, ledger_url: str, clients: dict[str, AuditClient]) -> None:
    order = await clients["alpha"].ex.create_order("BTC/USDT", "market", "buy", 0.01,
                                                   params={"clientOrderId": OURS})
    ledger_order(ledger_url, OURS, "FILLED", venue_order_id=str(order["id"]), filled="0.01")
    ledger = Ledger(ledger_url, "live")
    report = await recon(bus, ledger, clients).run("alpha", "r1")
    missing = [d for d in report.discrepancies if d.kind == "missing_fill"]
    assert len(missing) == 1 and missing[0].client_order_id == OURS
    assert missing[0].resolution == "recorded 1 fill(s)"
    # The reconciler itself is killed and runs again before the ledger caught up: the same
    # fill is published with the same msg id, and JetStream keeps one.
    await recon(bus, ledger, clients).run("alpha", "r2")
    fills = [e for e in await messages(bus, "EXEC", "exec.fill.>") if isinstance(e, FillEvent)]
    assert len(fills) == 1
    f = fills[0]
    assert (f.client_order_id, f.quantity, f.intent_id, f.trade_id) == (OURS, D("0.01"),
                                                                          "M1:open", "M1")
    assert f.venue_trade_id == str(order["info"]["fills"][0]["tradeId"])
    ledger.close()


async def test_our_order_the_ledger_never_heard_of_is_recorded_from_its_trades(
        bus: Bus, ledger_url: str, clients: dict[str, AuditClient]) -> None:
    await clients["alpha"].ex.create_order("BTC/USDT", "market", "buy", 0.01,
                                           params={"clientOrderId": OURS})
    ledger = Ledger(ledger_url, "live")
    report = await recon(bus, ledger, clients).run("alpha", "r1")
    assert [(d.kind, d.client_order_id) for d in report.discrepancies] == [("missing_fill",
                                                                             OURS)]
    execs = await messages(bus, "EXEC", "exec.>")
    assert [(e.client_order_id, e.status) for e in execs if isinstance(e, OrderEvent)] == [
        (OURS, "FILLED")]
    assert len([e for e in execs if isinstance(e, FillEvent)]) == 1
    ledger.close()


async def test_an_external_trade_halts_entries_until_an_operator_acknowledges(
        bus: Bus, ledger_url: str, venue_sim: RunningSim, clients: dict[str, AuditClient]
        ) -> None:
    external_trade(venue_sim)
    ledger = Ledger(ledger_url, "live")
    gate = VenueGate("alpha", bus, recon(bus, ledger, clients, external="halt"),
                     interval_s=60, retry_max_s=1)
    await gate.startup()
    assert gate.ready and "external external_trade on alpha" in gate.halted
    ready = [e for e in await messages(bus, "RECON", "sys.ready.alpha")
             if isinstance(e, VenueReady)]
    assert (ready[-1].ready, ready[-1].halted) == (True, True)
    execs = await messages(bus, "EXEC", "exec.>")
    assert execs == []  # never silently adopted
    assert await gate.acknowledge()
    ready = [e for e in await messages(bus, "RECON", "sys.ready.alpha")
             if isinstance(e, VenueReady)]
    assert (ready[-1].ready, ready[-1].halted) == (True, False)
    await gate.rec.run("alpha", "r2")  # seen and acknowledged: no new halt
    await gate.sync_halt("r2")
    assert gate.halted == ""
    ledger.close()


async def test_adopt_policy_puts_the_external_trade_into_the_ledger(
        bus: Bus, ledger_url: str, venue_sim: RunningSim, clients: dict[str, AuditClient]
        ) -> None:
    external_trade(venue_sim)
    ledger = Ledger(ledger_url, "live")
    report = await recon(bus, ledger, clients, external="adopt").run("alpha", "r1")
    assert [(d.kind, d.resolution) for d in report.discrepancies] == [
        ("external_trade", "adopted into the ledger (trade_id=external)")]
    execs = await messages(bus, "EXEC", "exec.>")
    assert {(type(e).__name__, e.trade_id, e.client_order_id) for e in execs} == {
        ("OrderEvent", "external", "manual-1"), ("FillEvent", "external", "manual-1")}
    ledger.close()


async def test_balance_drift_halts_entries_after_two_checks_then_an_ack_rebaselines(
        bus: Bus, ledger_url: str, venue_sim: RunningSim, clients: dict[str, AuditClient]
        ) -> None:
    ledger = Ledger(ledger_url, "live")
    rec = recon(bus, ledger, clients, external="ignore", balance_interval_s=0.0)
    gate = VenueGate("alpha", bus, rec, interval_s=60, retry_max_s=1)
    await gate.startup()  # baseline
    assert gate.halted == ""
    # A recorded external trade (ignored by policy) is part of the expectation ...
    external_trade(venue_sim)
    for run_id in ("r1a", "r1b"):
        quiet = await rec.run("alpha", run_id, full=True)
        assert "balance_drift" not in [d.kind for d in quiet.discrepancies]
    # ... but BTC that appears from nowhere (a deposit, a trade no audit saw) is drift.
    venue_sim.sim.venues["alpha"].engine.account.credit("BTC", D("0.002"))
    first = await rec.run("alpha", "r2", full=True)
    assert "balance_drift" not in [d.kind for d in first.discrepancies]  # could be in flight
    second = await rec.run("alpha", "r3", full=True)
    drift = [d for d in second.discrepancies if d.kind == "balance_drift"]
    assert drift and "BTC venue=10.004 expected=10.002" in drift[0].detail
    await gate.sync_halt("r3")
    assert gate.halted.startswith("balance drift on alpha")
    await gate.acknowledge()
    await rec.run("alpha", "r4", full=True)  # new baseline
    again = await rec.run("alpha", "r5", full=True)
    assert "balance_drift" not in [d.kind for d in again.discrepancies]
    assert gate.halted == ""
    ledger.close()


async def test_a_stale_order_is_canceled_after_one_query_once_past_the_grace(
        bus: Bus, ledger_url: str, clients: dict[str, AuditClient]) -> None:
    never = client_order_id("M2:open", "sell")
    ledger_order(ledger_url, never, "SUBMITTED", age_s=120)
    ledger = Ledger(ledger_url, "live")
    report = await recon(bus, ledger, clients, stale_grace_s=60).run("alpha", "r1")
    assert [(d.kind, d.resolution) for d in report.discrepancies] == [
        ("stale_order", "canceled: not on the venue")]
    execs = await messages(bus, "EXEC", "exec.order.>")
    assert [(e.client_order_id, e.status) for e in execs] == [(never, "CANCELED")]
    ledger.close()


async def test_the_inflight_check_resolves_an_old_unknown_order_and_reports_it(
        bus: Bus, ledger_url: str, clients: dict[str, AuditClient]) -> None:
    order = await clients["alpha"].ex.create_order("BTC/USDT", "market", "buy", 0.01,
                                                   params={"clientOrderId": OURS})
    ledger_order(ledger_url, OURS, "UNKNOWN", age_s=30)  # the response was lost, long ago
    young = client_order_id("M3:open", "buy")
    ledger_order(ledger_url, young, "SUBMITTED", age_s=1)  # still the executor's to resolve
    ledger = Ledger(ledger_url, "live")
    found = await recon(bus, ledger, clients).inflight("alpha", 20, "inflight-1")
    assert [(d.client_order_id, d.resolution) for d in found] == [(OURS, "corrected: FILLED")]
    reports = await messages(bus, "RECON", "recon.report")
    assert [r.run_id for r in reports] == ["inflight-1"]
    execs = await messages(bus, "EXEC", "exec.>")
    assert {(type(e).__name__, e.client_order_id) for e in execs} == {
        ("OrderEvent", OURS), ("FillEvent", OURS)}
    assert str(order["id"]) in {e.venue_order_id for e in execs}
    ledger.close()

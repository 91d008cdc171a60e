"""Ledger (real PostgreSQL) vs venue comparisons, reports and the startup gate (real NATS)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import nats.errors
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from arb_common.bus import Bus
from arb_common.clock import ManualClock
from arb_common.ledger import Balance, DiscrepancyRow, Order, ReconRun
from arb_common.messages import FillEvent, OrderEvent, ReconReport, VenueReady, decode
from arb_executor.legs import client_order_id
from arb_executor.venue_client import VenueFill, VenueOrder
from arb_reconciler.app import VenueGate, readiness
from arb_reconciler.reconcile import Ledger, LedgerOrder, Reconciler, ReconFailed, compare

from .conftest import FakeVenue

pytestmark = pytest.mark.integration

OURS_OPEN = client_order_id("T1:open", "buy")
OURS_FILLED = client_order_id("T2:open", "buy")
OURS_NEW = client_order_id("T3:open", "sell")
OURS_UNRECORDED = client_order_id("T4:open", "buy")


def vorder(coid: str, status: str = "ACKED", filled: str = "0", **kw: Any) -> VenueOrder:
    return VenueOrder(client_order_id=coid, status=status, quantity=D("0.01"),  # type: ignore[arg-type]
                      filled=D(filled), venue_order_id=kw.pop("oid", "1"), side="buy",
                      symbol="BTC-USDT", **kw)


def lorder(coid: str, status: str = "ACKED", filled: str = "0") -> LedgerOrder:
    return LedgerOrder("alpha", "BTC-USDT", coid, "buy", D("0.01"), D(filled), status)


def test_compare_classifies_every_difference() -> None:
    venue_open = [vorder(OURS_OPEN), vorder(OURS_UNRECORDED), vorder("web_12345")]
    ledger_open = [lorder(OURS_OPEN), lorder(OURS_NEW, "NEW")]
    found, stale, drift = compare(venue_open, ledger_open)
    assert sorted((d.kind, d.client_order_id) for d in found) == [
        ("external_order", "web_12345"), ("unknown_open_order", OURS_UNRECORDED)]
    assert [o.client_order_id for o in stale] == [OURS_NEW]
    assert drift == []
    _, _, drift = compare([vorder(OURS_OPEN, "PARTIALLY_FILLED", "0.004")], ledger_open)
    assert [lo.client_order_id for lo, _ in drift] == [OURS_OPEN]


def insert_orders(url: str, rows: list[tuple[str, str, str]]) -> None:
    now = datetime.now(UTC)
    with Session(create_engine(url)) as s, s.begin():
        for coid, status, mode in rows:
            s.add(Order(mode=mode, session="s1", venue="alpha", symbol="BTC-USDT",
                        client_order_id=coid, side="buy", quantity=D("0.01"),
                        filled_quantity=D(0), status=status, intent_id="i", trade_id="t",
                        created_at=now, updated_at=now))


async def messages(bus: Bus, stream: str, pattern: str) -> list[Any]:
    sub = await bus.js.pull_subscribe(bus.subjects.any(pattern),
                                      stream=bus.subjects.stream_name(stream))
    out: list[Any] = []
    while True:
        try:
            batch = await sub.fetch(100, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
            break
        out.extend(decode(m.data)[1] for m in batch)
    await sub.unsubscribe()
    return out


async def test_run_records_discrepancies_balances_and_corrects_from_the_venue(
        bus: Bus, ledger_url: str) -> None:
    insert_orders(ledger_url, [(OURS_OPEN, "ACKED", "live"), (OURS_FILLED, "UNKNOWN", "live"),
                               (OURS_NEW, "NEW", "live"), ("apaperonly", "NEW", "paper")])
    venue = FakeVenue()
    venue.open = [vorder(OURS_OPEN), vorder(OURS_UNRECORDED, oid="7"), vorder("web_1", oid="8")]
    venue.all[OURS_FILLED] = vorder(OURS_FILLED, "FILLED", "0.01", oid="5", avg_price=D("100"),
                                    fills=[VenueFill("55", D("0.01"), D("100"), D("0.001"),
                                                     "USDT", 1_700_000_000_000)])
    ledger = Ledger(ledger_url, "live")
    rec = Reconciler(bus, ledger, {"alpha": venue})
    report = await rec.run("alpha", "run1")

    kinds = sorted((d.kind, d.client_order_id, d.resolution) for d in report.discrepancies)
    assert kinds == sorted([
        ("unknown_open_order", OURS_UNRECORDED, "recorded"),
        ("external_order", "web_1", "halted new entries (policy); acknowledge to resume"),
        ("stale_order", OURS_FILLED, "corrected: FILLED"),
        ("stale_order", OURS_NEW, "waiting"),  # younger than the grace: may be sent now
    ])
    with Session(ledger.engine) as s:
        runs = s.scalars(select(ReconRun)).all()
        assert [(r.run_id, r.ok) for r in runs] == [("run1", True)]
        assert len(s.scalars(select(DiscrepancyRow)).all()) == 4
        bal = s.scalars(select(Balance)).one()
        assert (bal.asset, bal.free, bal.source) == ("USDT", D("1000"), "venue")
    recon = await messages(bus, "RECON", "recon.report")
    assert len(recon) == 1 and isinstance(recon[0], ReconReport) and recon[0].ok
    execs = await messages(bus, "EXEC", "exec.>")
    assert [(type(e).__name__, getattr(e, "status", None)) for e in execs] == [
        ("OrderEvent", "FILLED"), ("FillEvent", None)]
    assert isinstance(execs[0], OrderEvent) and execs[0].filled_quantity == D("0.01")
    assert isinstance(execs[1], FillEvent) and execs[1].venue_trade_id == "55"
    ledger.close()


async def test_unreachable_venue_fails_the_run_and_records_it(bus: Bus, ledger_url: str) -> None:
    venue = FakeVenue()
    venue.fail = ConnectionRefusedError("venue down")
    ledger = Ledger(ledger_url, "live")
    with pytest.raises(ReconFailed, match="venue open orders"):
        await Reconciler(bus, ledger, {"alpha": venue}).run("alpha", "run2")
    with Session(ledger.engine) as s:
        run = s.scalars(select(ReconRun)).one()
        assert not run.ok and "venue down" in run.error
    ledger.close()


async def test_the_last_run_time_per_venue_and_result_is_exported(
        bus: Bus, ledger_url: str) -> None:
    def last(result: str) -> float | None:
        return REGISTRY.get_sample_value("arb_reconciler_last_run_timestamp_seconds",
                                         {"venue": "gamma", "result": result})

    clock = ManualClock(1_800_000_000 * 1_000_000_000)
    venue = FakeVenue()
    ledger = Ledger(ledger_url, "live")
    rec = Reconciler(bus, ledger, {"gamma": venue}, clock=clock)
    await rec.run("gamma", "run-ok")
    assert (last("ok"), last("failed")) == (1_800_000_000, None)
    clock.advance(600)  # ten minutes later the venue is down: the last good run stays put
    venue.fail = ConnectionRefusedError("venue down")
    with pytest.raises(ReconFailed):
        await rec.run("gamma", "run-failed")
    assert (last("ok"), last("failed")) == (1_800_000_000, 1_800_000_600)
    ledger.close()


async def test_gate_opens_only_after_the_report_and_stays_closed_while_failing(
        bus: Bus, ledger_url: str) -> None:
    venue = FakeVenue()
    venue.fail = ConnectionRefusedError("venue down")
    ledger = Ledger(ledger_url, "live")
    gate = VenueGate("alpha", bus, Reconciler(bus, ledger, {"alpha": venue}),
                     interval_s=60, retry_max_s=0.2)
    task = asyncio.create_task(gate.startup())
    await asyncio.sleep(1.0)
    assert not gate.ready
    ok, detail = readiness({"alpha": gate})
    assert not ok and "venue down" in detail
    venue.fail = None
    await asyncio.wait_for(task, 5)
    assert readiness({"alpha": gate})[0]
    seq = [(type(m).__name__, getattr(m, "ready", getattr(m, "ok", None)))
           for m in await messages(bus, "RECON", ">")]
    assert seq[0] == ("VenueReady", False)
    assert seq[-2:] == [("ReconReport", True), ("VenueReady", True)]
    assert all(m == ("ReconReport", False) for m in seq[1:-2])
    last = await bus.last_message("RECON", bus.subjects.ready("alpha"))
    assert last is not None and isinstance(last[1], VenueReady) and last[1].ready
    ledger.close()


async def test_unreachable_database_keeps_the_gate_closed(bus: Bus) -> None:
    ledger = Ledger("postgresql+psycopg://postgres@127.0.0.1:1/none", "live", timeout_s=1)
    gate = VenueGate("alpha", bus, Reconciler(bus, ledger, {"alpha": FakeVenue()},
                                              db_timeout_s=1.5), interval_s=60, retry_max_s=0.2)
    task = asyncio.create_task(gate.startup())
    await asyncio.sleep(2.0)
    ok, detail = readiness({"alpha": gate})
    assert not ok and "database" in detail
    task.cancel()
    last = await bus.last_message("RECON", bus.subjects.ready("alpha"))
    assert last is not None and last[1].ready is False and last[1].reason == "reconciling"

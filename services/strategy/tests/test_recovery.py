"""Crash recovery of the strategy on real NATS (the state service's snapshot subjects answered
by an in-test stand-in; test_recovery_ledger.py runs the real one on PostgreSQL):
fail closed until restored, kill + restart restores exactly, replay without a snapshot, the
last intents reconcile the engine, snapshot triggers and operator requests."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from strategy_helpers import (
    SnapshotResponder,
    graceful_stop,
    kill,
    new_strategy,
    open_gate,
    order,
    publish_books,
    publish_exec,
    reverted_books,
    round_trip,
    wait_exec_seq,
    wide_books,
)

from arb_common.bus import Bus
from arb_common.testing import connected_bus, wait_until

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def request(bus: Bus, verb: str, body: dict[str, Any] | None = None) -> Any:
    msg = await bus.nc.request(bus.subjects.ctl("strategy", verb), orjson.dumps(body or {}),
                               timeout=10)
    return orjson.loads(msg.data)


async def test_no_decision_and_not_ready_until_the_state_service_answers(
        md_bus: Bus, nats_url: str, bus_prefix: str) -> None:
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix, live=False)
    try:
        await publish_books(md_bus, *wide_books(100))
        await wait_until(lambda: svc.ready()[0], what="fresh books")
        await asyncio.sleep(1.5)  # a few load attempts without an answer
        ok, detail = svc.restore_ready()
        assert not ok and "state service" in detail
        assert svc.engine.open_trades() == {}  # fail closed
        assert await md_bus.last_message("STRAT", md_bus.subjects.intent("BTC-USDT")) is None
        responder = SnapshotResponder(md_bus)
        await responder.start()
        await asyncio.wait_for(svc.live_event.wait(), 10)
        assert svc.restore_ready() == (True, "")
        await publish_books(md_bus, *wide_books(200))
        await wait_until(lambda: "BTC-USDT" in svc.engine.open_trades(), what="open once live")
        await wait_until(lambda: responder.reasons() == ["start"], what="start snapshot")
    finally:
        await svc.bus.close()


async def test_kill_and_restart_restores_guard_positions_statistics_and_open_trade_exactly(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    await open_gate(md_bus)
    # snapshots at once after each close (no spacing), so a replay is left to check
    svc = await new_strategy(nats_url, bus_prefix, snapshot_min_spacing_s=0)
    await publish_books(md_bus, *wide_books(100))
    await wait_until(lambda: "BTC-USDT" in svc.engine.open_trades(), what="BTC open")
    trade_id = svc.engine.open_trades()["BTC-USDT"].trade_id
    await publish_exec(md_bus, *round_trip("E1", symbol="ETH-USDT"))
    await wait_until(lambda: "trade_closed" in snapshots.reasons(), what="trade_closed snapshot")
    # After that snapshot: the BTC open's legs (one partially), a loss on ETH, half a trade.
    await publish_exec(
        md_bus,
        order("alpha", "buy", trade_id, "open", "0.01"),
        order("beta", "sell", trade_id, "open", "0.006", status="EXPIRED"),
        *round_trip("E2", symbol="ETH-USDT", base=10, prices=("60000", "59990", "60100", "59000")),
        *round_trip("E3", symbol="ETH-USDT", base=20)[:3],
    )
    await wait_exec_seq(svc, md_bus)
    assert svc.engine.open_trades()["BTC-USDT"].quantity == Decimal("0.006")
    await svc.saver.idle()  # (a save in flight at the kill would make the count below racy)
    before = svc.memory.state()
    replayed = metric("arb_strategy_replayed_events_total")
    await kill(svc)
    # replayed: what came after the last snapshot saved (E2's close saved one more)
    since = before["exec_seq"] - snapshots.saved[-1]["exec_seq"]
    assert since >= 3

    again = await new_strategy(nats_url, bus_prefix)
    try:
        assert again.memory.state() == before
        assert again.engine.open_trades() == svc.engine.open_trades()
        assert metric("arb_strategy_replayed_events_total") - replayed == since
        assert again.follower is not None and again.follower.handed == since
        # and it goes on from there: the closing fill of E3 completes that trade
        await publish_exec(md_bus, round_trip("E3", symbol="ETH-USDT", base=20)[3])
        await wait_until(lambda: again.memory.stats.portfolio().trades == 3, what="E3 done")
    finally:
        await again.bus.close()


async def test_without_a_snapshot_only_this_sessions_exec_events_are_replayed(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    async with connected_bus(nats_url, bus_prefix, "executor", session="other") as other, \
            connected_bus(nats_url, bus_prefix, "executor", mode="live", session="itest") as live:
        await publish_exec(other, *round_trip("X1"))
        await publish_exec(md_bus, *round_trip("M1"))
        await publish_exec(live, *round_trip("L1", base=10))
    await publish_exec(md_bus, *round_trip("M2", base=20)[:2])
    svc = await new_strategy(nats_url, bus_prefix)
    try:
        assert svc.memory.exec_seq == 14
        assert svc.memory.stats.portfolio().trades == 1
        assert {p.fills for p in svc.memory.positions.snaps()} == {3}  # M1 (2) + M2 (1)
        assert svc.memory.pnl.open_trades() == 1
        assert snapshots.loads == 1
    finally:
        await svc.bus.close()


async def test_an_open_decided_after_the_snapshot_comes_back_from_its_intent(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix, cooldown_s=30)
    await wait_until(lambda: snapshots.reasons() == ["start"], what="start snapshot")
    await publish_books(md_bus, *wide_books(100))
    await wait_until(lambda: "BTC-USDT" in svc.engine.open_trades(), what="BTC open")
    await wait_until(lambda: not svc.decider.publishing, what="intent acknowledged")
    before = svc.engine.get_state()
    await kill(svc)

    again = await new_strategy(nats_url, bus_prefix, cooldown_s=30)
    assert again.engine.get_state() == before
    trade_id = before["open"]["BTC-USDT"]["trade_id"]
    await kill(again)
    # The open's legs filled nothing (learned while down): the restart comes back flat.
    await publish_exec(md_bus, order("alpha", "buy", trade_id, "open", "0", status="REJECTED"),
                       order("beta", "sell", trade_id, "open", "0", status="REJECTED"))
    third = await new_strategy(nats_url, bus_prefix, cooldown_s=30)
    try:
        assert third.engine.open_trades() == {}
        assert third.engine.get_state()["cooldown_until"]["BTC-USDT"] > 0
    finally:
        await third.bus.close()


async def test_a_close_decided_after_the_snapshot_leaves_the_same_cooldown(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix, cooldown_s=30)
    await publish_books(md_bus, *wide_books(100))
    await wait_until(lambda: "BTC-USDT" in svc.engine.open_trades(), what="BTC open")
    await wait_until(lambda: not svc.decider.publishing, what="open acknowledged")
    await svc.saver.save("manual")  # the snapshot has the trade open
    await publish_books(md_bus, *reverted_books(200))
    await wait_until(lambda: svc.engine.open_trades() == {}, what="closed")
    await wait_until(lambda: not svc.decider.publishing, what="close acknowledged")
    before = svc.engine.get_state()
    assert before["closing"] == {} and before["cooldown_until"]["BTC-USDT"] > 0
    await kill(svc)
    again = await new_strategy(nats_url, bus_prefix, cooldown_s=30)
    try:
        assert again.engine.get_state() == before
    finally:
        await again.bus.close()


async def test_snapshot_triggers_and_operator_requests(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    svc = await new_strategy(nats_url, bus_prefix, snapshot_interval_s=0.5)
    await wait_until(lambda: snapshots.reasons()[:1] == ["start"], what="start snapshot")
    await publish_exec(md_bus, *round_trip("T1"))
    await wait_until(lambda: "trade_closed" in snapshots.reasons(), what="trade_closed")
    await wait_until(lambda: "periodic" in snapshots.reasons(), what="periodic")
    reply = await request(md_bus, "snapshot")
    assert reply["ok"] is True and reply["exec_seq"] == 4
    assert snapshots.saved[-1]["snapshot_id"] == reply["snapshot_id"]
    state = await request(md_bus, "state")
    assert state["ok"] is True and state["live"] is True
    doc = state["state"]
    assert doc["exec_seq"] == 4 and doc["portfolio"]["trades"] == 1
    assert {k: doc[k] for k in svc.memory.state()} == svc.memory.state()
    saved = metric("arb_strategy_snapshots_saved_total", reason="shutdown")
    await graceful_stop(svc)
    assert snapshots.reasons()[-1] == "shutdown"
    assert metric("arb_strategy_snapshots_saved_total", reason="shutdown") == saved + 1


async def test_failed_saves_are_counted_and_the_next_trigger_saves(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    svc = await new_strategy(nats_url, bus_prefix)
    try:
        await wait_until(lambda: snapshots.reasons() == ["start"], what="start snapshot")
        failures = metric("arb_strategy_snapshot_failures_total")
        snapshots.fail_saves = True
        await publish_exec(md_bus, *round_trip("T1"))
        await wait_until(lambda: metric("arb_strategy_snapshot_failures_total") == failures + 1,
                         what="failure counted")
        reply = await request(md_bus, "snapshot")
        assert reply["ok"] is False and "down" in reply["error"]
        snapshots.fail_saves = False
        reply = await request(md_bus, "snapshot")
        assert reply["ok"] is True and reply["exec_seq"] == 4
        assert snapshots.reasons() == ["start", "manual"]
    finally:
        await svc.bus.close()


async def test_snapshot_request_before_restore_is_refused_with_the_reason(
        md_bus: Bus, nats_url: str, bus_prefix: str) -> None:
    svc = await new_strategy(nats_url, bus_prefix, live=False)
    try:
        await asyncio.sleep(0.3)
        reply = await request(md_bus, "snapshot")
        assert reply["ok"] is False and "not restored" in reply["error"]
    finally:
        await svc.bus.close()


async def test_a_burst_of_closed_trades_shares_snapshots_and_the_last_covers_them_all(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    svc = await new_strategy(nats_url, bus_prefix, snapshot_min_spacing_s=1.0)
    try:
        await wait_until(lambda: snapshots.reasons() == ["start"], what="start snapshot")
        await publish_exec(md_bus, *(f for k in range(5) for f in round_trip(f"B{k}",
                                                                            base=10 * k)))
        await wait_exec_seq(svc, md_bus)
        assert svc.memory.stats.portfolio().trades == 5
        await wait_until(lambda: snapshots.saved[-1]["exec_seq"] == 20, timeout=5,
                         what="a snapshot covering every close")
        closed = [d for d in snapshots.saved if d["reason"] == "trade_closed"]
        assert 1 <= len(closed) <= 2  # five closes, coalesced
    finally:
        await svc.bus.close()

"""The executor as a process against the simulator and a real NATS JetStream.

Shadow mode: decisions are filled by the paper model from the books and recorded; the venue
receives nothing (its account is only read), and an intent of another mode is refused.

Kill -9 (live mode, real signed REST through ccxt): the process is killed mid-intent, then
started again.

Two moments: between the two legs (one venue has the order, the other refused the request
with a 5xx burst), and after both legs were sent (both executed, answers held back by the
venues' latency, so nothing of their outcome was published). After the restart and the
intent's redelivery: no client order id reached a venue twice, every fill the venues made is
on the bus exactly once, and the legs (plus any hedge) are even: nothing is left naked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import httpx
import pytest

from arb_common.bus import Bus
from arb_common.messages import Book, FillEvent, Intent, OrderEvent, VenueReady, decode
from arb_common.testing import connected_bus, wait_until
from arb_executor.legs import client_order_id
from arb_venue_sim.testing import RunningSim

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SESSION = "s-kill9"
ACK_WAIT_S = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExecutorProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(env["ARB_HTTP_PORT"])

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "arb_executor"], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1) as c:
                    return (await c.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            if await ready():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"executor not ready: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
async def executor(tmp_path: Path, venue_sim: RunningSim, nats_url: str, bus_prefix: str,
                   cleanup_streams: None) -> AsyncIterator[ExecutorProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARB_")}
    env.update({
        "ARB_MODE": "live", "ARB_SESSION": SESSION, "ARB_PROFILE": "dev",
        "ARB_NATS_URL": nats_url, "ARB_BUS_PREFIX": bus_prefix,
        "ARB_HTTP_PORT": str(_free_port()), "ARB_VENUES": "alpha,beta",
        "ARB_INTENT_ACK_WAIT_S": str(ACK_WAIT_S), "ARB_UNKNOWN_RESOLVE_S": "4",
        "ARB_VENUE_TIMEOUT_S": "1", "ARB_HEDGE_POLICY": "complete",
    })
    for v, cfg in venue_sim.configs.items():
        up = v.upper()
        env.update({f"ARB_VENUE_{up}_REST_URL": cfg.rest_url, f"ARB_VENUE_{up}_WS_URL": cfg.ws_url,
                    f"ARB_VENUE_{up}_API_KEY": cfg.api_key,
                    f"ARB_VENUE_{up}_API_SECRET": cfg.api_secret,
                    f"ARB_VENUE_{up}_TAKER_FEE": cfg.taker_fee})
    proc = ExecutorProcess(env, tmp_path / "executor.log")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def bus(nats_url: str, bus_prefix: str) -> AsyncIterator[Bus]:
    async with connected_bus(nats_url, bus_prefix, "strategy", mode="live",
                             session=SESSION) as b:
        for v in ("alpha", "beta"):
            await b.publish(b.subjects.ready(v), VenueReady(venue=v, ready=True, run_id="t"),
                            f"ready:{v}:t:1")
        yield b


def _intent(n: int) -> Intent:
    return Intent(intent_id=f"K{n}:open", trade_id=f"K{n}", symbol="BTC-USDT", action="open",
                  buy_venue="alpha", sell_venue="beta", quantity=D("0.01"),
                  buy_price=D("60000"), sell_price=D("60000"), net_spread_bps=D("5"))


async def _exec_events(bus: Bus) -> tuple[list[OrderEvent], list[FillEvent]]:
    sub = await bus.js.pull_subscribe(bus.subjects.any("exec.>"),
                                      stream=bus.subjects.stream_name("EXEC"))
    out: list[Any] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(200, timeout=0.5)
            except Exception:  # noqa: BLE001 - nothing more
                break
            for m in msgs:
                out.append(decode(m.data)[1])
                await m.ack()
    finally:
        await sub.unsubscribe()
    return ([p for p in out if isinstance(p, OrderEvent)],
            [p for p in out if isinstance(p, FillEvent)])


async def _eventually(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


async def _check_after_restart(sim: RunningSim, bus: Bus, intent: Intent) -> int:
    """Wait until the intent settled; check nothing twice, nothing lost; the hedge count."""
    legs = {client_order_id(intent.intent_id, "buy"), client_order_id(intent.intent_id, "sell")}

    async def settled() -> bool:
        orders, _ = await _exec_events(bus)
        last: dict[str, OrderEvent] = {}
        for o in orders:
            last[o.client_order_id] = o
        if not legs <= set(last):
            return False
        if any(o.status not in ("FILLED", "REJECTED", "EXPIRED", "CANCELED")
               for o in last.values()):
            return False
        net = sum((o.filled_quantity if o.side == "buy" else -o.filled_quantity)
                  for o in last.values())
        return net == 0 and any(o.filled_quantity > 0 for o in last.values())

    await _eventually(settled, 60, "the intent settled with even legs")
    await asyncio.sleep(1.0)  # nothing more may come
    sent = Counter(r["client_order_id"] for v in ("alpha", "beta") for r in sim.records(v))
    assert max(sent.values()) == 1, f"a client order id was sent twice: {sent}"
    venue_fills = {(v, str(f["trade_id"])) for v in ("alpha", "beta")
                   for r in sim.records(v) for f in r.get("fills", [])}
    _, fills = await _exec_events(bus)
    keys = Counter((f.venue, f.venue_trade_id) for f in fills)
    assert set(keys) == venue_fills, (set(keys), venue_fills)
    assert max(keys.values()) == 1
    hedges = sum(1 for c in sent if c not in legs)
    print(f"orders on venues={sum(sent.values())} fills={len(venue_fills)} hedges={hedges}")
    return hedges


@pytest.mark.parametrize("max_age_s", ["30", "1"], ids=["redelivered-fresh", "redelivered-stale"])
async def test_kill9_between_the_two_legs_sends_nothing_twice_and_evens_out(
        executor: ExecutorProcess, venue_sim: RunningSim, bus: Bus, max_age_s: str) -> None:
    # fresh: the restarted executor sends the missing sell leg; stale: it may not send a
    # leg any more, so it hedges the naked buy instead.
    executor.env["ARB_INTENT_MAX_AGE_S"] = max_age_s
    executor.start()
    await executor.wait_ready()
    venue_sim.fault("beta", "http_5xx", 1.0, duration_s=4)  # the sell leg cannot get through
    intent = _intent(1)
    await bus.publish(bus.subjects.intent(intent.symbol), intent, f"intent:{intent.intent_id}")
    buy = client_order_id(intent.intent_id, "buy")
    await wait_until(lambda: any(r["client_order_id"] == buy
                                 for r in venue_sim.records("alpha")),
                     timeout=20, what="the buy leg on alpha")
    executor.kill9()
    venue_sim.clear_faults("beta")
    executor.start()
    await executor.wait_ready()
    hedges = await _check_after_restart(venue_sim, bus, intent)
    assert hedges == (1 if max_age_s == "1" else 0)


async def test_kill9_after_both_legs_were_sent_loses_no_fill(
        executor: ExecutorProcess, venue_sim: RunningSim, bus: Bus) -> None:
    executor.start()
    await executor.wait_ready()
    for v in ("alpha", "beta"):  # executed at once, answered 3 s later
        venue_sim.fault(v, "order_latency_ms", 3000, duration_s=6)
    intent = _intent(2)
    await bus.publish(bus.subjects.intent(intent.symbol), intent, f"intent:{intent.intent_id}")
    await wait_until(lambda: len(venue_sim.records("alpha")) and len(venue_sim.records("beta")),
                     timeout=20, what="both legs on the venues")
    executor.kill9()  # before either answer arrived: no fill was published yet
    orders, fills = await _exec_events(bus)
    assert not fills
    executor.start()
    await executor.wait_ready()
    await _check_after_restart(venue_sim, bus, intent)


async def test_shadow_mode_fills_on_paper_sends_nothing_and_refuses_other_modes(
        executor: ExecutorProcess, venue_sim: RunningSim, nats_url: str,
        bus_prefix: str) -> None:
    executor.env["ARB_MODE"] = "shadow"
    async with connected_bus(nats_url, bus_prefix, "strategy", mode="shadow",
                             session=SESSION) as sb:
        for v in ("alpha", "beta"):
            await sb.publish(sb.subjects.ready(v), VenueReady(venue=v, ready=True, run_id="t"),
                             f"ready:{v}:t:s")
        executor.start()
        await executor.wait_ready()
        for v, bid, ask in (("alpha", "59990", "60000"), ("beta", "60100", "60110")):
            await sb.nc.publish(sb.subjects.book(v, "BTC-USDT"), sb.envelope(Book(
                venue=v, symbol="BTC-USDT", seq=1, bids=[(D(bid), D("1"))],
                asks=[(D(ask), D("1"))], recv_ts=time.time_ns()), f"book:{v}:1"))
        await asyncio.sleep(0.5)
        intent = _intent(3)
        await sb.publish(sb.subjects.intent(intent.symbol), intent, f"intent:{intent.intent_id}")

        async def filled() -> bool:
            orders, _ = await _exec_events(sb)
            return {(o.venue, o.status) for o in orders} >= {("alpha", "FILLED"),
                                                              ("beta", "FILLED")}

        await _eventually(filled, 20, "both shadow legs filled on paper")
        _, fills = await _exec_events(sb)
        assert {(f.venue, f.price) for f in fills} == {("alpha", D("60000")),
                                                       ("beta", D("60100"))}
    # A live-mode intent on the same bus: refused by the shadow executor.
    async with connected_bus(nats_url, bus_prefix, "strategy", mode="live",
                             session=SESSION) as lb:
        other = _intent(4)
        await lb.publish(lb.subjects.intent(other.symbol), other, f"intent:{other.intent_id}")
        await asyncio.sleep(2.0)
        orders, _ = await _exec_events(lb)
        assert not [o for o in orders if o.intent_id == other.intent_id]
    assert venue_sim.records("alpha") == [] and venue_sim.records("beta") == []
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://127.0.0.1:{executor.port}/metrics")).text
    assert 'arb_executor_foreign_mode_intents_total{mode="live"} 1.0' in text
    assert "arb_executor_shadow_slippage_bps_count" in text

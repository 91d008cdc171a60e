"""Crash recovery of the whole system as processes (paper mode against the simulator).

One campaign, several faults, one truth: while the stack trades,
- the strategy is killed with SIGKILL while a trade is open → it comes back with that trade,
  its RiskGuard, positions and statistics (snapshot + replay of the events after it);
- the state service is killed with SIGKILL → nothing it had not committed is lost;
- Redis is flushed → the hot state is rebuilt from PostgreSQL / memory without a restart;
- PostgreSQL is cut off for ``ARB_RECOVERY_PG_DOWN_S`` seconds (default 30) while fills keep
  happening → they wait in JetStream and land exactly once when it returns.
At the end (trading off, all trades closed) the ledger holds every fill the executor
published exactly once, the strategy's positions/guard/statistics equal the ledger's, Redis
equals PostgreSQL, and one more SIGKILL of the strategy restores exactly the same state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import pytest
import redis
from nats.js.api import DeliverPolicy
from stack_helpers import nats_request, running_stack

from arb_common.messages import FillEvent, decode
from arb_common.subjects import Subjects
from arb_common.testing import TcpProxy
from arbctl.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PG_DOWN_S = float(os.environ.get("ARB_RECOVERY_PG_DOWN_S", "30"))
TRADE_WAIT_S = float(os.environ.get("ARB_E2E_TRADE_WAIT_S", "150"))
# Fast round trips so a few minutes hold many opens, closes and snapshots.
STACK_ENV = {"ARB_MAX_HOLD_S": "6", "ARB_COOLDOWN_S": "1", "ARB_SNAPSHOT_INTERVAL_S": "15"}


@pytest.fixture
def pg_proxy(fresh_database: str) -> Iterator[tuple[TcpProxy, str]]:
    target = urlsplit(fresh_database.replace("+psycopg", ""))
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        yield proxy, proxy.url_for(fresh_database)


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, pg_proxy: tuple[TcpProxy, str], redis_url: str,
          bus_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with running_stack(tmp_path / "arb", mode="paper", nats_url=nats_url,
                       database_url=pg_proxy[1], redis_url=redis_url, bus_prefix=bus_prefix,
                       env=STACK_ENV, monkeypatch=monkeypatch) as s:
        yield s


# ---------------------------------------------------------------- helpers
def _strategy_state(stack: Stack, nats_url: str) -> dict[str, Any]:
    subj = Subjects(stack.bus_prefix).ctl("strategy", "state")
    reply = nats_request(nats_url, subj, {})
    assert reply.get("ok"), reply
    return dict(reply["state"])


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    """What must survive a crash exactly (not the snapshot's own id, time or reason)."""
    return {k: state[k] for k in ("exec_seq", "positions", "metrics", "portfolio", "guard",
                                  "engine", "pnl")}


def _get(url: str, **params: Any) -> Any:
    resp = httpx.get(url, params=params, timeout=10)
    resp.raise_for_status()
    return resp.json()


def _ready(url: str) -> bool:
    """/readyz answers 200 when ready and 503 (with the same JSON body) when not."""
    resp = httpx.get(f"{url}/readyz", timeout=10)
    return bool(resp.json().get("ready"))


def _all(url: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _get(url, limit=1000, **params, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        cursor = page["next"]
        if not cursor:
            return items


def _wait(pred: Any, timeout: float, what: str, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
        except (TimeoutError, httpx.HTTPError, OSError, nats.errors.Error):
            got = None
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _pid(stack: Stack, name: str) -> int:
    row = next(r for r in stack.processes() if r["name"] == name)
    assert row["pid"], f"{name} has no pid: {row}"
    return int(row["pid"])


def _kill9_and_wait_back(stack: Stack, name: str) -> None:
    old = _pid(stack, name)
    os.kill(old, signal.SIGKILL)
    _wait(lambda: any(r["name"] == name and r["pid"] and r["pid"] != old and r["ready"]
                      for r in stack.processes()), 90, f"{name} restarted and ready")


def _published_fills(nats_url: str, stack: Stack) -> list[FillEvent]:
    """Every fill event the executor published for this session (the stream is the log)."""
    async def go() -> list[FillEvent]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        subj = Subjects(stack.bus_prefix)
        sub = await js.subscribe(subj.any("exec.fill.>"), ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)
        out: list[FillEvent] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except nats.errors.TimeoutError:
                    return out
                env, payload = decode(msg.data)
                if env.session == stack.session and isinstance(payload, FillEvent):
                    out.append(payload)
        finally:
            await nc.close()

    return asyncio.run(go())


# ---------------------------------------------------------------- the campaign
def test_kill9_flush_and_pg_outage_lose_nothing_and_restore_exactly(
        stack: Stack, nats_url: str, redis_url: str, bus_prefix: str,
        pg_proxy: tuple[TcpProxy, str]) -> None:
    stack.wait_healthy(180, ready=True)
    state_api = f"http://127.0.0.1:{stack.port('state')}"

    # 1) kill -9 the strategy while a trade is open.
    before = _wait(lambda: (s := _strategy_state(stack, nats_url))["engine"].get("open")
                   and s["portfolio"]["trades"] >= 1 and s, TRADE_WAIT_S,
                   "a closed trade and an open one")
    _kill9_and_wait_back(stack, "strategy")
    after = _strategy_state(stack, nats_url)
    assert after["exec_seq"] >= before["exec_seq"]
    for symbol, trade in before["engine"]["open"].items():
        closed = after["engine"]["open"].get(symbol, {}).get("trade_id") != trade["trade_id"]
        if closed:  # it may have closed in between; then the statistics counted it
            assert after["portfolio"]["trades"] > before["portfolio"]["trades"] or \
                after["engine"].get("closing", {}).get(symbol), (before, after)
    assert after["portfolio"]["trades"] >= before["portfolio"]["trades"]

    # 2) kill -9 the state service mid-run.
    _kill9_and_wait_back(stack, "state")

    # 3) Redis flushed while running (our deployment's keys; the engine is shared).
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = list(r.scan_iter(f"arb{bus_prefix}:*"))
    assert keys
    r.delete(*keys)
    _wait(lambda: list(r.scan_iter(f"arb{bus_prefix}:paper:{stack.session}:position:*")), 30,
          "positions rebuilt in Redis")

    # 4) PostgreSQL unreachable for PG_DOWN_S while fills keep coming.
    proxy = pg_proxy[0]
    fills_before = len(_published_fills(nats_url, stack))
    proxy.cut()
    _wait(lambda: not _ready(state_api), 20,
          "state not ready while PostgreSQL is down", step=1)
    time.sleep(PG_DOWN_S)
    fills_during = len(_published_fills(nats_url, stack)) - fills_before
    proxy.restore()
    _wait(lambda: _ready(state_api), 60, "state ready again")

    # Settle: trading off, every trade closed, the ledger caught up.
    subj = Subjects(bus_prefix).ctl("strategy", "trading")
    assert nats_request(nats_url, subj, {"enabled": False, "actor": "test"})["ok"]
    _wait(lambda: not _strategy_state(stack, nats_url)["engine"].get("open"), 60,
          "all trades closed")
    published = _published_fills(nats_url, stack)
    _wait(lambda: len(_all(f"{state_api}/api/fills", session=stack.session)) >= len(published),
          60, "ledger caught up")
    time.sleep(2)
    published = _published_fills(nats_url, stack)
    ledger = _all(f"{state_api}/api/fills", session=stack.session)
    print(f"fills published={len(published)} during_pg_outage={fills_during} "
          f"ledger={len(ledger)}")
    assert fills_during > 0, "no fills happened while PostgreSQL was down"

    # Nothing lost, nothing duplicated.
    keys_pub = Counter((f.venue, f.venue_trade_id) for f in published)
    keys_led = Counter((f["venue"], f["venue_trade_id"]) for f in ledger)
    assert set(keys_pub) == set(keys_led)
    assert max(keys_led.values()) == 1

    # The strategy's memory equals the ledger's.
    final = _strategy_state(stack, nats_url)
    positions = {(p["venue"], p["symbol"]): p for p in
                 _all(f"{state_api}/api/positions", session=stack.session)}
    mine = {(p["venue"], p["symbol"]): p for p in final["positions"]}
    assert set(mine) == set(positions)
    for key, p in positions.items():
        for field in ("quantity", "avg_price", "realized_pnl", "fees"):
            assert Decimal(mine[key][field]) == Decimal(p[field]), (key, field, mine[key], p)
        assert Decimal(final["guard"]["positions"][key[1]][key[0]]) == Decimal(p["quantity"])

    # Redis equals PostgreSQL.
    for (venue, symbol), p in positions.items():
        hot = r.hgetall(f"arb{bus_prefix}:paper:{stack.session}:position:{symbol}:{venue}")
        assert Decimal(hot["quantity"]) == Decimal(p["quantity"]), (venue, symbol, hot, p)

    # One more kill -9 at rest: exactly the same state comes back.
    _kill9_and_wait_back(stack, "strategy")
    assert _comparable(_strategy_state(stack, nats_url)) == _comparable(final)

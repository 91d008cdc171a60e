"""The whole system as processes on real NATS, PostgreSQL and Redis, trading live against the
simulator through the venues' signed REST API. At the end PostgreSQL, Redis and the venues'
own order lists must agree exactly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from stack_helpers import running_stack

from arbctl.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TRADE_WAIT_S = float(os.environ.get("ARB_E2E_TRADE_WAIT_S", "150"))


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, fresh_database: str, redis_url: str,
          bus_prefix: str) -> Iterator[Stack]:
    with running_stack(tmp_path / "arb", mode="live", nats_url=nats_url,
                       database_url=fresh_database, redis_url=redis_url,
                       bus_prefix=bus_prefix) as s:
        yield s


def _get(url: str, **params: Any) -> Any:
    resp = httpx.get(url, params=params, timeout=10)
    resp.raise_for_status()
    return resp.json()


def _all(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _get(url, limit=1000, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        cursor = page["next"]
        if not cursor:
            return items


def _venue_orders(sim: str, venue: str) -> list[dict[str, Any]]:
    return _get(f"{sim}/control/venues/{venue}/orders")["orders"]


def _ledger_matches_venues(state: str, sim: str) -> tuple[bool, str]:
    fills = _all(f"{state}/api/fills")
    orders = _all(f"{state}/api/orders")
    for venue in ("alpha", "beta"):
        ours = {o["client_order_id"] for o in orders if o["venue"] == venue}
        venue_orders = [o for o in _venue_orders(sim, venue) if o["client_order_id"] in ours]
        venue_fills = {(o["client_order_id"], f["trade_id"]): f for o in venue_orders
                       for f in o["fills"]}
        ledger_fills = {(f["client_order_id"], f["venue_trade_id"]): f for f in fills
                        if f["venue"] == venue}
        if set(venue_fills) != set(ledger_fills):
            return False, (f"{venue}: venue fills {len(venue_fills)} vs ledger "
                           f"{len(ledger_fills)}")
        for key, vf in venue_fills.items():
            lf = ledger_fills[key]
            if Decimal(vf["quantity"]) != Decimal(lf["quantity"]) or \
                    Decimal(vf["price"]) != Decimal(lf["price"]) or \
                    Decimal(vf["fee"]) != Decimal(lf["fee"]):
                return False, f"{venue}: fill {key} differs: venue {vf} ledger {lf}"
    return True, ""


def test_stack_trades_live_and_ledger_redis_and_venues_agree(stack: Stack, redis_url: str,
                                                              bus_prefix: str) -> None:
    rows = stack.wait_healthy(180, ready=True)
    assert {r["name"] for r in rows} == {"nats", "postgres", "redis", "venue-sim", "market-data",
                                         "strategy", "executor", "state", "reconciler"}
    state = f"http://127.0.0.1:{stack.port('state')}"
    sim = f"http://127.0.0.1:{stack.port('venue-sim')}"

    deadline = time.monotonic() + TRADE_WAIT_S
    fills: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        fills = _get(f"{state}/api/fills", limit=1000)["items"]
        if len(fills) >= 4:
            break
        time.sleep(1)
    assert len(fills) >= 4, f"no trading after {TRADE_WAIT_S}s; see {stack.logs}"

    # Stop new entries so the ledger can settle, then compare the three records.
    ok, why = False, ""
    for _ in range(60):
        ok, why = _ledger_matches_venues(state, sim)
        if ok:
            break
        time.sleep(1)
    assert ok, why

    positions = _all(f"{state}/api/positions")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = list(r.scan_iter(f"arb{bus_prefix}:live:{stack.session}:position:*"))
    assert keys, "no positions in Redis"
    for p in positions:
        key = f"arb{bus_prefix}:live:{stack.session}:position:{p['symbol']}:{p['venue']}"
        hot = r.hgetall(key)
        assert hot, f"position {key} missing in Redis"
        assert Decimal(hot["quantity"]) == Decimal(p["quantity"]), (key, hot, p)

    # /metrics on every service shows counters that moved.
    for name, metric in (("market-data", "arb_market_data_books_published_total"),
                         ("strategy", "arb_strategy_intents_total"),
                         ("executor", "arb_executor_orders_total"),
                         ("state", "arb_state_events_ingested_total"),
                         ("reconciler", "arb_reconciler_runs_total")):
        text = httpx.get(f"http://127.0.0.1:{stack.port(name)}/metrics", timeout=10).text
        moved = [ln for ln in text.splitlines()
                 if ln.startswith(metric) and not ln.endswith(" 0.0")]
        assert moved, f"{name}: {metric} did not move"

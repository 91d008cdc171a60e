"""Query API over a real ledger: filters, keyset pagination, summary, sync status, 422s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from state_helpers import T0, all_pages, event, fill, order

from arb_common.ledger import DiscrepancyRow, ReconRun
from arb_common.runtime import ServiceRuntime
from arb_common.settings import Mode
from arb_state.api import register
from arb_state.config import StateSettings
from arb_state.ingest import ingest_batch

S = 1_000_000_000


def _seed_fills(engine: Engine, n: int) -> None:
    batch = [
        event(fill(f"t{i}", "buy", "0.1", str(100 + i), venue="alpha" if i % 2 else "beta",
                   symbol="BTC-USDT" if i % 3 else "ETH-USDT", ts=T0 + (i // 2) * S))
        for i in range(n)
    ]  # fmt: skip (pairs share a timestamp: the id breaks the tie)
    ingest_batch(engine, batch)


async def test_fills_paginate_without_duplicates_or_gaps(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    _seed_fills(engine, 250)
    items = await all_pages(client, "/api/fills", limit=100)
    ids = [i["venue_trade_id"] for i in items]
    assert len(ids) == 250 and len(set(ids)) == 250
    ts = [i["ts"] for i in items]
    assert ts == sorted(ts, reverse=True)  # newest first
    first = items[0]
    assert set(first) >= {"venue", "symbol", "client_order_id", "venue_trade_id", "side",
                          "quantity", "price", "fee", "fee_asset", "ts", "mode", "session"}
    assert isinstance(first["price"], str) and first["quantity"] == "0.1"


async def test_fill_filters_combine(engine: Engine, client: httpx.AsyncClient) -> None:
    _seed_fills(engine, 60)
    since = "2023-11-14T22:13:30Z"  # T0 + 10 s
    items = await all_pages(client, "/api/fills", venue="alpha", symbol="BTC-USDT",
                             since=since, limit=7)
    expected = {f"t{i}" for i in range(60) if i % 2 and i % 3 and i // 2 >= 10}
    assert {i["venue_trade_id"] for i in items} == expected
    r = await client.get("/api/fills", params={"session": "nope"})
    assert r.json() == {"items": [], "next": None}
    r = await client.get("/api/fills", params={"mode": "live"})
    assert r.json()["items"] == []
    r = await client.get("/api/fills", params={"until": "2023-11-14T22:13:21", "limit": 1000})
    assert len(r.json()["items"]) == 2  # only T0 (until is exclusive); naive time is UTC


async def test_orders_positions_and_sessions_lists(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    ingest_batch(engine, [event(order(f"c{i}", "ACKED", ts=T0 + i * S)) for i in range(5)]
                 + [event(fill("t1", "buy", "2", "100", venue="beta"))])
    orders = await all_pages(client, "/api/orders", limit=2)
    assert [o["client_order_id"] for o in orders] == ["c4", "c3", "c2", "c1", "c0"]
    assert orders[0]["status"] == "ACKED" and orders[0]["filled_quantity"] == "0"
    positions = (await client.get("/api/positions", params={"venue": "beta"})).json()["items"]
    assert positions == [{
        "mode": "paper", "session": "s1", "venue": "beta", "symbol": "BTC-USDT",
        "quantity": "2", "avg_price": "100", "realized_pnl": "0", "fees": "0",
        "updated_at": positions[0]["updated_at"],
    }]  # fmt: skip
    assert (await client.get("/api/sessions")).json() == {"items": [], "next": None}


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "WyJvcmRlciIsIngiLDFd"}, "cursor"),  # an order cursor on fills
        ({"mode": "demo"}, "mode"),
    ],
)
async def test_bad_parameters_answer_422_naming_them(
    client: httpx.AsyncClient, params: dict[str, str], name: str
) -> None:
    r = await client.get("/api/fills", params=params)
    assert r.status_code == 422, r.text
    assert name in r.json()["detail"]


async def test_summary_counts_closed_round_trips_and_winrate(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    def leg(trade: str, n: int, side: str, venue: str, px: str, action: str) -> Any:
        return event(fill(f"{trade}-{n}", side, "1", px, fee="0.1", venue=venue,
                          coid=f"{trade}{n}", intent_id=f"{trade}:{action}", trade_id=trade))

    ingest_batch(engine, [
        # T1: buy alpha 100 / sell beta 102, then close: sell alpha 101 / buy beta 101 → win
        leg("T1", 1, "buy", "alpha", "100", "open"), leg("T1", 2, "sell", "beta", "102", "open"),
        leg("T1", 3, "sell", "alpha", "101", "close"), leg("T1", 4, "buy", "beta", "101", "close"),
        # T2: +0.1 on alpha, 0 on beta, 0.4 fees → a loss
        leg("T2", 1, "buy", "alpha", "100", "open"), leg("T2", 2, "sell", "beta", "100", "open"),
        leg("T2", 3, "sell", "alpha", "100.1", "close"),
        leg("T2", 4, "buy", "beta", "100", "close"),
        # T3: still open
        leg("T3", 1, "buy", "alpha", "100", "open"), leg("T3", 2, "sell", "beta", "101", "open"),
    ])  # fmt: skip
    body = (await client.get("/api/summary")).json()
    btc = body["symbols"]["BTC-USDT"]
    assert (btc["trades"], btc["wins"], btc["winrate"], btc["open_trades"]) == (2, 1, 0.5, 1)
    assert btc["fees"] == "1" and body["total"]["fees_by_asset"] == {"USDT": "1"}
    # realized: alpha 1 + 0.1, beta 1 + 0, minus 1.0 fees
    assert btc["realized_pnl"] == "1.1"
    assert (body["mode"], body["session"]) == ("paper", "s1")
    other = (await client.get("/api/summary", params={"session": "s9"})).json()
    assert other["total"]["trades"] == 0
    every = (await client.get("/api/summary", params={"session": "all", "mode": "all"})).json()
    assert every["total"]["trades"] == 2


async def test_sync_status_shows_each_venues_last_run_with_its_discrepancies(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(ReconRun), [
            {"venue": "alpha", "run_id": "a1", "started_at": t, "duration_ms": 12.5, "ok": True,
             "error": ""},
            {"venue": "alpha", "run_id": "a2", "started_at": t + timedelta(minutes=5),
             "duration_ms": 40.0, "ok": False, "error": "2 discrepancies"},
            {"venue": "beta", "run_id": "b1", "started_at": t + timedelta(minutes=1),
             "duration_ms": 8.0, "ok": True, "error": ""},
        ])  # fmt: skip
        conn.execute(insert(DiscrepancyRow), [
            {"run_id": run, "venue": "alpha", "kind": kind, "detail": detail,
             "resolution": resolution, "client_order_id": coid, "ts": t + timedelta(seconds=s)}
            for run, kind, detail, resolution, coid, s in (
                ("a1", "stale_order", "old run", "recorded", None, 0),
                ("a2", "missing_order", "c9 not on venue", "marked_rejected", "c9", 301),
                ("a2", "balance_drift", "USDT -1", "recorded", None, 302),
            )
        ])  # fmt: skip
    body = (await client.get("/api/sync_status")).json()
    assert body["ok"] is False  # alpha's last run failed
    alpha, beta = body["venues"]
    assert (alpha["venue"], alpha["run_id"], alpha["ok"], alpha["duration_ms"], alpha["error"]) \
        == ("alpha", "a2", False, 40.0, "2 discrepancies")
    assert alpha["started_at"] == "2024-01-01T00:05:00+00:00"
    assert [(d["kind"], d["resolution"], d["client_order_id"]) for d in alpha["discrepancies"]] \
        == [("missing_order", "marked_rejected", "c9"), ("balance_drift", "recorded", None)]
    assert alpha["discrepancies"][0]["detail"] == "c9 not on venue"
    assert (beta["venue"], beta["run_id"], beta["ok"], beta["discrepancies"]) == (
        "beta", "b1", True, [])
    only_beta = (await client.get("/api/sync_status", params={"venue": "beta"})).json()
    assert only_beta["ok"] is True and [v["venue"] for v in only_beta["venues"]] == ["beta"]
    r = await client.get("/api/sync_status", params={"venue": "Beta!"})
    assert r.status_code == 422 and "venue" in r.json()["detail"]


async def test_sync_status_before_any_reconciliation(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/sync_status")).json() == {"ok": False, "venues": []}


async def test_ledger_not_connected_answers_503() -> None:
    settings = StateSettings(session="s1", mode=Mode.paper)
    rt = ServiceRuntime("state", settings)
    register(rt.app, lambda: None, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app),
                                 base_url="http://state") as c:  # fmt: skip
        for path in ("/api/summary", "/api/trades", "/api/sync_status", "/api/equity"):
            assert (await c.get(path)).status_code == 503

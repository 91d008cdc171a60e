"""Intents ingest, slippage derivation, equity history and marks on real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.engine import Engine
from state_helpers import T0, event, fill

from arb_common.clock import ManualClock
from arb_common.ledger import EquityHistory, IntentRow, SessionRow, SlippageAnalysis
from arb_common.messages import Book, Intent
from arb_common.runtime import ServiceRuntime
from arb_common.settings import Mode
from arb_common.testing import connected_bus, wait_until
from arb_state.analytics import (
    derive_slippage,
    equity_loop,
    export_equity,
    ingest_intents,
    intent_batch_handler,
    record_equity,
    slippage_loop,
)
from arb_state.api import register
from arb_state.config import StateSettings
from arb_state.ingest import ingest_batch
from arb_state.marks import Marks

S = 1_000_000_000
BTC = "BTC-USDT"


def intent(trade: str, action: str = "open", *, buy: str = "100", sell: str = "125",
           qty: str = "2", symbol: str = BTC) -> Intent:  # fmt: skip
    return Intent(
        intent_id=f"{trade}:{action}", trade_id=trade, symbol=symbol, action=action,  # type: ignore[arg-type]
        buy_venue="alpha", sell_venue="beta", quantity=Decimal(qty), buy_price=Decimal(buy),
        sell_price=Decimal(sell), net_spread_bps=Decimal("12.5"), reason="spread",
    )  # fmt: skip


def leg(n: int, side: str, px: str, *, trade: str = "T1", venue: str = "alpha",
        qty: str = "2", ts: int = T0) -> Any:  # fmt: skip
    return fill(f"{trade}-{n}", side, qty, px, venue=venue, coid=f"{trade}{n}",
                intent_id=f"{trade}:open", trade_id=trade, ts=ts)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _slippage(engine: Engine) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    sa = SlippageAnalysis
    with engine.connect() as conn:
        rows = conn.execute(select(sa.venue_trade_id, sa.expected_price, sa.slippage_bps,
                                   sa.slippage_quote)).all()  # fmt: skip
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    settings = StateSettings(session="s1", mode=Mode.paper)
    rt = ServiceRuntime("state", settings)
    register(rt.app, lambda: engine, settings, clock=ManualClock(T0 + 3600 * S))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app),
                                 base_url="http://state") as c:  # fmt: skip
        yield c


# ------------------------------------------------------------------ intents


def test_intent_ingest_is_idempotent(engine: Engine) -> None:
    events = [event(intent("T1"), "intent:T1:open"), event(intent("T1", "close"))]
    assert ingest_intents(engine, events) == 2
    assert ingest_intents(engine, events) == 0  # redelivered: nothing changes
    assert ingest_intents(engine, [event(intent("T1"), mode="live")]) == 1  # other mode
    with engine.connect() as conn:
        row = conn.execute(select(IntentRow).where(IntentRow.intent_id == "T1:open",
                                                   IntentRow.mode == "paper")).one()  # fmt: skip
    assert (row.buy_price, row.sell_price, row.quantity, row.action) == (
        Decimal(100), Decimal(125), Decimal(2), "open")
    assert (row.session, row.ts) == ("s1", datetime.fromtimestamp(T0 / S, UTC))
    assert _count(engine, IntentRow) == 3


async def test_intents_from_the_strat_stream_are_stored_once_and_acked(
    engine: Engine, nats_url: str, bus_prefix: str, cleanup_streams: None
) -> None:
    async with connected_bus(nats_url, bus_prefix, "strategy", session="s1") as bus:
        subject = bus.subjects.intent(BTC)
        await bus.publish(subject, intent("T1"), "intent:T1:open")
        await bus.publish(subject, intent("T1", "close"), "intent:T1:close")
        # A re-publish after the duplicate window would carry a new Nats-Msg-Id: same intent.
        await bus.publish(subject, intent("T1"), "intent:T1:open:again")
        bus.consume(stream="STRAT", durable="state-intents",
                    filter_subject=bus.subjects.any("strat.intent.>"),
                    batch_handler=intent_batch_handler(lambda: engine))  # fmt: skip
        await wait_until(lambda: _count(engine, IntentRow) == 2, what="intents stored")
        stream = bus.subjects.stream_name("STRAT")
        for _ in range(200):  # acked after the commit: the ack floor reaches the last message
            info = await bus.js.consumer_info(stream, "state-intents")
            if info.ack_floor.stream_seq == 3 and not info.num_ack_pending:
                break
            await asyncio.sleep(0.05)
        assert info.ack_floor.stream_seq == 3
        assert info.num_pending == 0 and info.num_ack_pending == 0
    assert _count(engine, IntentRow) == 2


# ------------------------------------------------------------------ slippage


def test_slippage_signs_positive_when_worse_for_buys_and_sells(engine: Engine) -> None:
    ingest_intents(engine, [event(intent("T1", buy="100", sell="125"))])
    ingest_batch(engine, [event(f) for f in (
        leg(1, "buy", "100.05"),  # paid 0.05 more than 100: +5 bps, +0.05 × 2 = +0.1 quote
        leg(2, "buy", "99.9"),  # paid 0.1 less: -10 bps, -0.2 quote (better than expected)
        leg(3, "sell", "124.5", venue="beta"),  # got 0.5 less than 125: +40 bps, +1.0 quote
        leg(4, "sell", "125.25", venue="beta"),  # got 0.25 more: -20 bps, -0.5 quote
    )])  # fmt: skip
    assert derive_slippage(engine) == 4
    got = {k: tuple(v.normalize() for v in vals) for k, vals in _slippage(engine).items()}
    assert got == {
        "T1-1": (Decimal(100), Decimal(5), Decimal("0.1")),
        "T1-2": (Decimal(100), Decimal(-10), Decimal("-0.2")),
        "T1-3": (Decimal(125), Decimal(40), Decimal(1)),
        "T1-4": (Decimal(125), Decimal(-20), Decimal("-0.5")),
    }


def test_hedge_fills_are_left_out_and_leg_slippage_is_observed_in_bps(engine: Engine) -> None:
    def buckets() -> tuple[float, float, float]:  # count, <= 2 bps, <= 5 bps
        return (metric("arb_state_slippage_bps_count", venue="alpha", symbol=BTC),
                metric("arb_state_slippage_bps_bucket", venue="alpha", symbol=BTC, le="2.0"),
                metric("arb_state_slippage_bps_bucket", venue="alpha", symbol=BTC, le="5.0"))

    count, within2, within5 = buckets()
    ingest_intents(engine, [event(intent("T1", buy="100", sell="125"))])
    # The buy leg (client order id "a...") paid 100.05: +5 bps. The sell leg on beta never
    # filled, so the executor sold the bought 2 back on alpha with a hedge order ("h...")
    # at 99: not a slippage of the intent's sell price 125 (that would read +792 bps).
    ingest_batch(engine, [event(f) for f in (
        fill("T1-1", "buy", "2", "100.05", coid="a" + "1" * 30, intent_id="T1:open",
             trade_id="T1"),
        fill("T1-2", "sell", "2", "99", coid="h" + "2" * 30, intent_id="T1:open",
             trade_id="T1"),
    )])  # fmt: skip
    assert derive_slippage(engine) == 1
    assert set(_slippage(engine)) == {"T1-1"}
    assert derive_slippage(engine) == 0  # the hedge fill is not waiting for anything
    assert buckets() == (count + 1, within2, within5 + 1)  # one leg, in the (2, 5] bucket


def test_slippage_derivation_is_idempotent_bounded_and_waits_for_the_intent(
    engine: Engine,
) -> None:
    fills = [leg(i, "buy", "100.1", ts=T0 + i * S) for i in range(5)]
    other = fill("X-1", "buy", "1", "1", intent_id="T2:open", trade_id="T2")
    ingest_batch(engine, [event(f) for f in fills] + [event(other)])
    ingest_batch(engine, [event(leg(9, "buy", "100.1"), mode="live")])  # live: paper intent
    assert derive_slippage(engine) == 0  # no intents yet: nothing to compare with
    ingest_intents(engine, [event(intent("T1"))])
    assert derive_slippage(engine, limit=2) == 2  # bounded per run, oldest fills first
    assert set(_slippage(engine)) == {"T1-0", "T1-1"}
    assert derive_slippage(engine, limit=2) == 2
    assert derive_slippage(engine) == 1
    assert derive_slippage(engine) == 0  # idempotent: every paper fill of T1 has its row
    assert _count(engine, SlippageAnalysis) == 5  # the live fill never met a live intent


async def test_slippage_api_lists_fills_and_aggregates(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    ingest_intents(engine, [event(intent("T1", buy="100", sell="125"))])
    # alpha buys at 100.01 ... 100.10: slippage 1, 2, ..., 10 bps on 2 units each.
    ingest_batch(engine, [
        event(leg(i, "buy", str(Decimal(100) + Decimal(i) / 100), ts=T0 + i * S))
        for i in range(1, 11)
    ] + [event(leg(11, "sell", "124.5", venue="beta", ts=T0 + 11 * S))])  # fmt: skip
    assert derive_slippage(engine) == 11
    body = (await client.get("/api/slippage", params={"symbol": BTC, "days": 1})).json()
    assert len(body["items"]) == 11 and body["next"] is None
    newest = body["items"][0]
    assert (newest["venue_trade_id"], newest["side"], newest["expected_price"],
            newest["realized_price"]) == ("T1-11", "sell", "125", "124.5")  # fmt: skip
    buys, sells = body["aggregates"]  # ordered by (symbol, venue, side): alpha buy, beta sell
    # bps 1..10: mean 5.5, median 5.5, p95 = 9 + 0.55 × (10 - 9) = 9.55 (linear);
    # quote 2 × (0.01 + ... + 0.10) = 1.1; expected notional 10 × 200 → 1.1 / 2000 = 5.5 bps.
    assert buys == {"symbol": BTC, "venue": "alpha", "side": "buy", "count": 10,
                    "mean_bps": "5.5", "median_bps": "5.5", "p95_bps": "9.55",
                    "weighted_bps": "5.5", "total_quote": "1.1"}  # fmt: skip
    assert (sells["count"], sells["mean_bps"], sells["total_quote"]) == (1, "40", "1")
    page = (await client.get("/api/slippage", params={"limit": 4, "venue": "alpha"})).json()
    assert len(page["items"]) == 4 and page["next"] is not None
    assert [a["venue"] for a in page["aggregates"]] == ["alpha"]  # every row, not the page
    assert page["aggregates"][0]["count"] == 10
    # days counts back from the API clock (T0 + 1 h): 0.01 days = 14.4 min → nothing.
    old = (await client.get("/api/slippage", params={"days": 0.01})).json()
    assert old == {"items": [], "next": None, "aggregates": []}


@pytest.mark.parametrize(("params", "name"), [
    ({"days": "0"}, "days"), ({"days": "ten"}, "days"), ({"days": "100000"}, "days"),
    ({"venue": "Alpha!"}, "venue"), ({"cursor": "nope"}, "cursor"),
])  # fmt: skip
async def test_bad_slippage_parameters_answer_422(
    client: httpx.AsyncClient, params: dict[str, str], name: str
) -> None:
    r = await client.get("/api/slippage", params=params)
    assert r.status_code == 422, r.text
    assert name in r.json()["detail"]


# ------------------------------------------------------------------ equity


def test_record_equity_writes_one_row_per_running_session_of_the_mode(engine: Engine) -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(SessionRow), [
            {"id": "s1", "mode": "paper", "started_at": now, "status": "running"},
            {"id": "s2", "mode": "paper", "started_at": now, "status": "running"},
            {"id": "s0", "mode": "paper", "started_at": now, "status": "stopped"},
            {"id": "L1", "mode": "live", "started_at": now, "status": "running"},
        ])  # fmt: skip
    ingest_batch(engine, [
        # s1: buy 2 @ 100, sell 1 @ 110 (fee 0.5) → realized 10 - 0.5 = 9.5, long 1 @ 100.
        event(fill("a1", "buy", "2", "100", ts=T0)),
        event(fill("a2", "sell", "1", "110", fee="0.5", ts=T0 + S)),
        # s2: short 1 @ 50 on beta (no book: marked at its last paper fill, 50 → 0).
        event(fill("b1", "sell", "1", "50", venue="beta", ts=T0 + S), session="s2"),
        event(fill("c1", "buy", "1", "1", ts=T0 + 2 * S), mode="live", session="L1"),
    ])  # fmt: skip
    marks = Marks(max_age_s=None)
    marks.update(Book(venue="alpha", symbol=BTC, seq=1, bids=[(Decimal(104), Decimal(1))],
                      asks=[(Decimal(106), Decimal(1))]))  # mid 105: s1 unrealized +5
    points = record_equity(engine, marks, "paper", now=now)
    got = {p.session: (p.realized, p.unrealized, p.equity) for p in points}
    assert got == {"s1": (Decimal("9.5"), Decimal(5), Decimal("14.5")),
                   "s2": (Decimal(0), Decimal(0), Decimal(0))}  # fmt: skip
    assert points[0].hot_fields() == {"equity": "14.5", "realized": "9.5", "unrealized": "5",
                                      "ts": str(1_704_067_200 * S)}  # fmt: skip
    assert points[0].unrealized_by_symbol == {BTC: Decimal(5)}
    export_equity(points, "s1")  # the state service's own session: its gauges
    assert metric("arb_state_equity") == 14.5
    assert metric("arb_state_unrealized_pnl", symbol=BTC) == 5
    export_equity(points, "s2")
    assert metric("arb_state_equity") == 0 and metric("arb_state_unrealized_pnl", symbol=BTC) == 0
    record_equity(engine, marks, "paper", now=now)
    with engine.connect() as conn:
        sessions = conn.execute(select(EquityHistory.session)).scalars().all()
    assert sorted(sessions) == ["s1", "s1", "s2", "s2"]  # nothing for stopped s0 or live


async def test_equity_api_paginates_newest_first(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    with engine.begin() as conn:
        conn.execute(insert(EquityHistory), [
            {"mode": "paper", "session": "s1", "ts": datetime.fromtimestamp(T0 / S + i, UTC),
             "equity": i, "realized": i, "unrealized": 0}
            for i in range(7)
        ])  # fmt: skip
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 3, "since": "2023-11-14T22:13:21Z"}
        body = (await client.get("/api/equity", params={**params, **(
            {"cursor": cursor} if cursor else {})})).json()  # fmt: skip
        seen += [i["equity"] for i in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == ["6", "5", "4", "3", "2", "1"]
    assert set(body["items"][0]) == {"mode", "session", "ts", "equity", "realized",
                                     "unrealized"}  # fmt: skip
    r = await client.get("/api/equity", params={"since": "2023-99-01"})
    assert r.status_code == 422 and "since" in r.json()["detail"]


async def test_periodic_jobs_derive_slippage_and_record_equity_until_stopped(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        conn.execute(insert(SessionRow).values(id="s1", mode="paper", status="running",
                                               started_at=datetime.now(UTC)))  # fmt: skip
    ingest_intents(engine, [event(intent("T1"))])
    ingest_batch(engine, [event(leg(i, "buy", "100.1", ts=T0 + i * S)) for i in range(5)])
    stopping = asyncio.Event()
    seen: list[str] = []

    async def on_points(points: list[Any]) -> None:
        seen.extend(p.session for p in points)

    jobs = [
        asyncio.create_task(slippage_loop(lambda: engine, stopping, 0.05, limit=2)),
        asyncio.create_task(equity_loop(lambda: engine, None, "paper", stopping, 0.05,
                                        on_points)),
        asyncio.create_task(equity_loop(lambda: None, None, "paper", stopping, 0.05)),
    ]  # fmt: skip
    await wait_until(lambda: _count(engine, SlippageAnalysis) == 5 and len(seen) >= 2,
                     what="slippage rows and two equity points")  # fmt: skip
    stopping.set()
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=5)
    assert set(seen) == {"s1"} and _count(engine, EquityHistory) == len(seen)


async def test_a_failed_job_run_is_counted_by_task_and_the_job_goes_on() -> None:
    down = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                         connect_args={"connect_timeout": 1})
    before = {t: metric("arb_state_analytics_errors_total", task=t) for t in ("slippage",
                                                                             "equity")}
    stopping = asyncio.Event()
    jobs = [asyncio.create_task(slippage_loop(lambda: down, stopping, 0.05)),
            asyncio.create_task(equity_loop(lambda: down, None, "paper", stopping, 0.05))]
    try:
        await wait_until(lambda: all(metric("arb_state_analytics_errors_total", task=t)
                                     >= n + 2 for t, n in before.items()),
                         what="two failed runs of each job counted")  # fmt: skip
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=5)
        down.dispose()


# ------------------------------------------------------------------ marks


async def test_marks_follow_books_on_the_bus(
    nats_url: str, bus_prefix: str, cleanup_streams: None
) -> None:
    clock = ManualClock()
    marks = Marks(max_age_s=30, clock=clock)
    async with connected_bus(nats_url, bus_prefix, "market-data") as bus:
        await marks.start(bus)

        async def book(bid: str, ask: str, seq: int) -> None:
            b = Book(venue="alpha", symbol=BTC, seq=seq, bids=[(Decimal(bid), Decimal(1))],
                     asks=[(Decimal(ask), Decimal(1))])  # fmt: skip
            await bus.publish_fast(bus.subjects.book("alpha", BTC), b, f"book:alpha:{BTC}:{seq}")

        await book("100", "101", 1)
        await wait_until(lambda: marks.mid("alpha", BTC) == Decimal("100.5"), what="first mid")
        await book("102", "102.2", 2)
        await wait_until(lambda: marks.mid("alpha", BTC) == Decimal("102.1"), what="newer mid")
    assert marks.mid("beta", BTC) is None
    clock.advance(31)
    assert marks.mid("alpha", BTC) is None  # the feed went quiet: no longer a mark
    marks.update(Book(venue="alpha", symbol=BTC, seq=3, bids=[], asks=[]))
    assert len(marks) == 1  # a one-sided/empty book is not a price

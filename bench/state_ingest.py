"""Ledger ingest throughput into PostgreSQL (issue 3 target: >= 10,000 events/s sustained).

Workload: arbitrage legs on several symbols and two venues, each leg NEW → ACKED →
PARTIALLY_FILLED (+ fill) → FILLED (+ fill), 6 events, with 64 legs in flight at once, so an
order's events are spread over consecutive batches (upserts of existing rows, not only
inserts). Every run starts from a fresh, migrated database; the ledger grows during the run.

Rows:
  writer/pipeline   ``LedgerWriter`` (the state service's hot path: async psycopg pipeline)
  writer/sqlalchemy ``ingest_batch`` (the SQLAlchemy twin; poison isolation and tools)
  e2e/jetstream     events pre-published to EXEC, then the state service (in-process, real
                    consumer, Redis hot state on) drains the backlog into PostgreSQL:
                    first batch handled → last batch committed (and acked)

Engines: the ``ARB_TEST_DATABASE_URL`` server (a database is created and dropped per run),
``ARB_TEST_NATS_URL`` and ``ARB_TEST_REDIS_URL`` (e2e; prefixed streams and keys, removed
afterwards). Run on demand (not a test):

    uv run python bench/state_ingest.py --events 50000 --batches 256,1024

Prints a table and writes bench/results/state_ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "services" / "state" / "tests"))
from report import percentile, print_table, write_json  # noqa: E402
from state_helpers import migrate  # noqa: E402

from arb_common.messages import FillEvent, OrderEvent, decode, encode  # noqa: E402
from arb_common.testing import delete_prefixed_streams  # noqa: E402
from arb_state.ingest import IngestEvent, LedgerWriter, ingest_batch  # noqa: E402

PG = os.environ.get("ARB_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("ARB_TEST_NATS_URL", "nats://127.0.0.1:4222")
REDIS = os.environ.get("ARB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "LTC"]
TARGET = 10_000
T0 = time.time_ns()
MS = 1_000_000


# ---------------------------------------------------------------- workload


def _leg(n: int, symbol: str, venue: str, side: str) -> list[tuple[str, Any]]:
    """One order's life as (msg id, payload): 4 order events and 2 fills."""
    coid, ts = f"b{n:08d}", T0 + n * MS
    qty, px = Decimal("0.5"), Decimal(100 + n % 50)

    def o(status: str, filled: str, k: int) -> tuple[str, Any]:
        return f"order:{coid}:{status}:{filled}", OrderEvent(
            venue=venue, symbol=symbol, client_order_id=coid, side=side,  # type: ignore[arg-type]
            quantity=qty, filled_quantity=Decimal(filled), status=status,  # type: ignore[arg-type]
            avg_price=px if filled != "0" else None, ts=ts + k, venue_order_id=f"v{n}",
        )  # fmt: skip

    def f(i: int, k: int) -> tuple[str, Any]:
        return f"fill:{venue}:{coid}-{i}", FillEvent(
            venue=venue, symbol=symbol, client_order_id=coid, venue_trade_id=f"{coid}-{i}",
            side=side, quantity=Decimal("0.25"), price=px, fee=Decimal("0.01"),  # type: ignore[arg-type]
            fee_asset="USDT", ts=ts + k, venue_order_id=f"v{n}",
        )  # fmt: skip

    return [o("NEW", "0", 0), o("ACKED", "0", 1), f(1, 2), o("PARTIALLY_FILLED", "0.25", 3),
            f(2, 4), o("FILLED", "0.5", 5)]


def workload(events: int, symbols: int, in_flight: int = 64) -> list[tuple[str, bytes]]:
    """``events`` encoded envelopes (msg id, bytes), legs interleaved ``in_flight`` at a time."""
    syms = [f"{b}-USDT" for b in BASES[:symbols]]
    legs = [_leg(n, syms[n % len(syms)], ("alpha", "beta")[n % 2], ("buy", "sell")[n // 2 % 2])
            for n in range(events // 6 + 1)]
    out: list[tuple[str, bytes]] = []
    for start in range(0, len(legs), in_flight):
        group = legs[start:start + in_flight]
        for step in range(6):
            for leg in group:
                msg_id, payload = leg[step]
                data = encode(payload, msg_id=msg_id, source="bench", session="bench",
                              mode="paper", ts=T0)
                out.append((msg_id, data))
    return out[:events]


def decoded(data: list[tuple[str, bytes]]) -> list[IngestEvent]:
    out: list[IngestEvent] = []
    for seq, (_, raw) in enumerate(data, start=1):
        env, payload = decode(raw)
        out.append((env, payload, seq))
    return out


# ---------------------------------------------------------------- database per run


@contextmanager
def fresh_database() -> Iterator[str]:
    admin = make_url(PG).set(drivername="postgresql").render_as_string(hide_password=False)
    name = "arb_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG).set(drivername="postgresql+psycopg", database=name)
    try:
        rendered = url.render_as_string(hide_password=False)
        migrate(rendered)
        yield rendered
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def row(kind: str, batch: int, n: int, seconds: float, lat_ms: list[float]) -> dict[str, Any]:
    rate = n / seconds if seconds > 0 else 0.0
    return {
        "path": kind, "batch": batch, "events": n, "seconds": round(seconds, 2),
        "events_per_s": round(rate), "batch_p50_ms": round(percentile(lat_ms, 0.5), 2),
        "batch_p99_ms": round(percentile(lat_ms, 0.99), 2), "target_events_per_s": TARGET,
        "meets_target": rate >= TARGET,
    }  # fmt: skip


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- writer runs


def bench_pipeline(events: list[IngestEvent], batch: int) -> dict[str, Any]:
    async def run(url: str) -> tuple[float, list[float]]:
        writer = LedgerWriter(url)
        lat: list[float] = []
        try:
            started = time.perf_counter()
            for b in chunks(events, batch):
                t = time.perf_counter()
                await writer.ingest(b)
                lat.append((time.perf_counter() - t) * 1000)
            return time.perf_counter() - started, lat
        finally:
            await writer.close()

    with fresh_database() as url:
        seconds, lat = asyncio.run(run(url))
    return row("writer/pipeline", batch, len(events), seconds, lat)


def bench_sqlalchemy(events: list[IngestEvent], batch: int) -> dict[str, Any]:
    with fresh_database() as url:
        engine = create_engine(url)
        lat: list[float] = []
        try:
            started = time.perf_counter()
            for b in chunks(events, batch):
                t = time.perf_counter()
                ingest_batch(engine, b)
                lat.append((time.perf_counter() - t) * 1000)
            seconds = time.perf_counter() - started
        finally:
            engine.dispose()
    return row("writer/sqlalchemy", batch, len(events), seconds, lat)


# ---------------------------------------------------------------- end to end


async def _publish_all(data: list[tuple[str, bytes]], prefix: str) -> None:
    from arb_common.bus import Bus

    pub = Bus(NATS, service="bench", session="bench", mode="paper", prefix=prefix)
    await pub.connect()
    try:
        await pub.provision()
        subjects = pub.subjects
        for part in chunks(data, 1000):
            await asyncio.gather(*(
                pub.js.publish(_subject(subjects, raw), raw, headers={"Nats-Msg-Id": msg_id})
                for msg_id, raw in part
            ))  # fmt: skip
    finally:
        await pub.close()


def _subject(subjects: Any, raw: bytes) -> str:
    _, payload = decode(raw)
    kind = subjects.fill if isinstance(payload, FillEvent) else subjects.order
    return str(kind(payload.venue, payload.symbol))


async def _cleanup(prefix: str) -> None:
    import redis.asyncio as aioredis

    await delete_prefixed_streams(NATS, prefix)
    r = aioredis.Redis.from_url(REDIS)
    try:
        keys = [k async for k in r.scan_iter(match=f"arb{prefix}:*", count=1000)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


async def _e2e(url: str, data: list[tuple[str, bytes]], batch: int) -> tuple[float, list[float]]:
    from arb_common.runtime import ServiceRuntime
    from arb_common.settings import Mode
    from arb_state.app import StateService
    from arb_state.config import StateSettings

    prefix = "b" + secrets.token_hex(4)
    await _publish_all(data, prefix)
    settings = StateSettings(
        database_url=url, redis_url=REDIS, nats_url=NATS, bus_prefix=prefix, session="bench",
        mode=Mode.paper, ingest_batch=batch,
    )  # fmt: skip
    rt = ServiceRuntime("state", settings)
    svc = StateService(rt)
    lat: list[float] = []
    first: list[float] = []
    handled = 0
    done = asyncio.Event()
    inner: Callable[[Sequence[Any]], Any] = svc.handle_batch

    async def timed(deliveries: Sequence[Any]) -> None:
        nonlocal handled
        t = time.perf_counter()
        if not first:
            first.append(t)
        await inner(deliveries)
        lat.append((time.perf_counter() - t) * 1000)
        handled += len(deliveries)
        if handled >= len(data):
            done.set()

    svc.handle_batch = timed  # type: ignore[method-assign]
    try:
        await svc.start(rt)
        await asyncio.wait_for(done.wait(), timeout=600)
        seconds = time.perf_counter() - first[0]
    finally:
        rt.stopping.set()
        for fn in reversed(rt._shutdown):
            await fn()
        for task in rt._tasks:
            task.cancel()
        await asyncio.gather(*rt._tasks, return_exceptions=True)
        await _cleanup(prefix)
    return seconds, lat


def bench_e2e(data: list[tuple[str, bytes]], batch: int) -> dict[str, Any]:
    with fresh_database() as url:
        seconds, lat = asyncio.run(_e2e(url, data, batch))
    return row("e2e/jetstream", batch, len(data), seconds, lat)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--symbols", type=int, default=6)
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--no-e2e", action="store_true", help="writer rows only")
    ap.add_argument("--no-sqlalchemy", action="store_true", help="skip the SQLAlchemy twin")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    data = workload(args.events, args.symbols)
    events = decoded(data)
    n_fills = sum(1 for e in events if isinstance(e[1], FillEvent))
    rows: list[dict[str, Any]] = []
    for batch in batches:
        rows.append(bench_pipeline(events, batch))
        if not args.no_sqlalchemy:
            rows.append(bench_sqlalchemy(events, batch))
        if not args.no_e2e:
            rows.append(bench_e2e(data, batch))
    title = (f"State ingest into PostgreSQL: {len(events)} events ({n_fills} fills), "
             f"{args.symbols} symbols x 2 venues")
    print_table(title, rows)
    path = write_json("state_ingest", rows, {
        "events": len(events), "fills": n_fills, "symbols": args.symbols, "venues": 2,
        "legs_in_flight": 64, "batches": batches, "target_events_per_s": TARGET,
    })  # fmt: skip
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

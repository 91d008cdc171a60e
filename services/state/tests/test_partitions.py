"""Monthly partitions of fills/orders: created ahead, rows in the right month, DEFAULT emptied."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from state_helpers import event, fill, order

from arb_state.ingest import LedgerWriter, ingest_batch
from arb_state.partitions import (
    add_months,
    ensure_partitions,
    is_partition,
    month_of,
    partition_name,
    partitions_of,
    run_maintenance,
)

S = 1_000_000_000


def _ns(y: int, m: int, d: int = 15) -> int:
    return int(datetime(y, m, d, 12, tzinfo=UTC).timestamp()) * S


def _where(engine: Engine, table: str, column: str, value: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = :v"), {"v": value}
        ).scalars())  # fmt: skip


def test_month_arithmetic_and_names() -> None:
    assert add_months(date(2030, 11, 1), 3) == date(2031, 2, 1)
    assert add_months(date(2030, 1, 1), -1) == date(2029, 12, 1)
    assert month_of(datetime(2030, 12, 31, 23, 59, tzinfo=UTC)) == date(2030, 12, 1)
    assert partition_name("fills", date(2031, 2, 1)) == "fills_p2031_02"
    assert is_partition("fills_p2031_02") and is_partition("orders_default")
    assert not is_partition("fills") and not is_partition("fill_keys")
    assert not is_partition("fills_p2031_2x")


def test_partitions_are_created_ahead_across_a_year_end(engine: Engine) -> None:
    with engine.begin() as conn:
        report = ensure_partitions(conn, 2, now=datetime(2030, 11, 20, tzinfo=UTC))
    assert report.created == ["orders_p2030_11", "orders_p2030_12", "orders_p2031_01",
                              "fills_p2030_11", "fills_p2030_12", "fills_p2031_01"]
    with engine.connect() as conn:
        bounds = partitions_of(conn, "orders")
    assert bounds["orders_p2031_01"] == (
        "FOR VALUES FROM ('2031-01-01 00:00:00+00') TO ('2031-02-01 00:00:00+00')")
    with engine.begin() as conn:  # idempotent
        again = ensure_partitions(conn, 2, now=datetime(2030, 11, 20, tzinfo=UTC))
    assert again.created == [] and again.moved == {}


def test_rows_land_in_their_month_and_outside_rows_in_default(engine: Engine) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, 1, now=datetime(2030, 11, 20, tzinfo=UTC))
    ingest_batch(engine, [
        event(fill("t-nov", "buy", "1", "100", ts=_ns(2030, 11))),
        event(fill("t-dec", "buy", "1", "100", ts=_ns(2030, 12, 31))),
        event(fill("t-old", "buy", "1", "100", ts=_ns(2021, 5))),
        event(order("c-dec", "NEW", ts=_ns(2030, 12, 1))),
    ])  # fmt: skip
    assert _where(engine, "fills", "venue_trade_id", "t-nov") == ["fills_p2030_11"]
    assert _where(engine, "fills", "venue_trade_id", "t-dec") == ["fills_p2030_12"]
    assert _where(engine, "fills", "venue_trade_id", "t-old") == ["fills_default"]
    assert _where(engine, "orders", "client_order_id", "c-dec") == ["orders_p2030_12"]


def test_maintenance_moves_default_rows_into_their_new_month(engine: Engine) -> None:
    ingest_batch(engine, [
        event(fill("t1", "buy", "1", "100", ts=_ns(2021, 5, 1))),
        event(fill("t2", "sell", "0.5", "110", ts=_ns(2021, 5, 31))),
        event(fill("t3", "buy", "2", "90", ts=_ns(2019, 1))),
        event(order("c1", "FILLED", "1", ts=_ns(2021, 5, 2))),
    ])  # fmt: skip
    with engine.connect() as conn:
        before = conn.execute(text("SELECT * FROM fills ORDER BY id")).all()
    assert set(_where(engine, "fills", "session", "s1")) == {"fills_default"}

    report = run_maintenance(engine, 1)
    assert report.moved == {"fills_p2019_01": 1, "fills_p2021_05": 2, "orders_p2021_05": 1}
    assert _where(engine, "fills", "venue_trade_id", "t2") == ["fills_p2021_05"]
    assert _where(engine, "orders", "client_order_id", "c1") == ["orders_p2021_05"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fills_default")).scalar_one() == 0
        after = conn.execute(text("SELECT * FROM fills ORDER BY id")).all()
    assert after == before  # moved, not changed
    # Keys still deduplicate, and the moved order still merges (one row).
    again = ingest_batch(engine, [event(fill("t1", "buy", "1", "100", ts=_ns(2021, 5, 1))),
                                  event(order("c1", "ACKED", ts=_ns(2021, 5, 1)))])
    assert again.fills_inserted == 0
    assert _where(engine, "orders", "client_order_id", "c1") == ["orders_p2021_05"]


def test_order_whose_first_event_arrives_late_moves_to_its_month(engine: Engine) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, 1, now=datetime(2030, 11, 20, tzinfo=UTC))
    ingest_batch(engine, [event(order("c1", "FILLED", "1", ts=_ns(2030, 12, 1)))])
    assert _where(engine, "orders", "client_order_id", "c1") == ["orders_p2030_12"]
    ingest_batch(engine, [event(order("c1", "NEW", ts=_ns(2030, 11, 30)))])
    assert _where(engine, "orders", "client_order_id", "c1") == ["orders_p2030_11"]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, created_at FROM orders")).one()
        key = conn.execute(text("SELECT created_at FROM order_keys")).scalar_one()
    assert row.status == "FILLED" and row.created_at == key  # the key follows the row


def test_maintenance_while_writers_ingest_loses_nothing(engine: Engine) -> None:
    """Partitions are created (and DEFAULT emptied) while two writers ingest: no deadlock, no
    row lost or doubled, and every month ends up in its own partition."""
    url = engine.url.render_as_string(hide_password=False)
    batches = [
        [event(fill(f"t{b}-{i}", "buy", "1", "100", ts=_ns(2020, 1 + (b + i) % 12, 10),
                    venue=("alpha", "beta")[b % 2]))
         for i in range(24)]
        + [event(order(f"c{b}-{i}", "FILLED", "1", ts=_ns(2020, 1 + i % 12)))
           for i in range(8)]
        for b in range(40)
    ]  # fmt: skip

    async def write(part: list[list[Any]]) -> None:
        writer = LedgerWriter(url)
        try:
            for b in part:
                await writer.ingest(b)
        finally:
            await writer.close()

    def maintain() -> None:
        for i in range(12):
            with engine.begin() as conn:
                ensure_partitions(conn, 0, now=datetime(2031, 1 + i, 1, tzinfo=UTC),
                                  lock_timeout_ms=10_000)
            time.sleep(0.02)

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(
            write(batches[0::2]), write(batches[1::2]), asyncio.to_thread(maintain),
        ), timeout=120)  # fmt: skip

    asyncio.run(run())
    run_maintenance(engine, 0)
    with engine.connect() as conn:
        fills = conn.execute(text("SELECT count(*), count(DISTINCT venue_trade_id) FROM fills")
                             ).one()  # fmt: skip
        qty = conn.execute(text("SELECT sum(quantity) FROM positions")).scalar_one()
        in_default = conn.execute(text(
            "SELECT (SELECT count(*) FROM fills_default) + (SELECT count(*) FROM orders_default)"
        )).scalar_one()  # fmt: skip
        months = conn.execute(text(
            "SELECT count(DISTINCT tableoid) FROM fills WHERE ts < '2021-01-01'")).scalar_one()
    assert tuple(fills) == (960, 960) and qty == 960
    assert in_default == 0 and months == 12

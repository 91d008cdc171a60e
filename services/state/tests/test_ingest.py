"""Batch → ledger: idempotency, lifecycle order, atomic batches, history, concurrency (real
PostgreSQL); every behaviour for both writers (the SQLAlchemy twin and the async pipeline)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from state_helpers import T0, event, fill, order

from arb_common.ledger import Fill, Order, OrderStatusHistory, Position, PositionHistory
from arb_common.messages import OrderEvent
from arb_state.ingest import IngestResult, LedgerWriter, ingest_batch, ns_to_dt

D = Decimal
S = 1_000_000_000  # one second in ns


Ingest = Callable[[Sequence[Any]], IngestResult]  # the ``ingest`` fixture (conftest)


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _position(engine: Engine, venue: str = "alpha", symbol: str = "BTC-USDT") -> Any:
    """The positions row (columns as attributes)."""
    with engine.connect() as conn:
        return conn.execute(
            select(Position).where(Position.venue == venue, Position.symbol == symbol)
        ).one()


def test_same_fill_and_order_events_twice_make_one_row_each(engine: Engine, ingest: Ingest) -> None:
    batch = [
        event(order("c1", "ACKED", venue_order_id="v1"), "order:c1:ACKED:0"),
        event(fill("t1", "buy", "1", "100", fee="0.1"), "fill:alpha:t1"),
    ]
    first = ingest(batch)
    second = ingest(batch)
    assert (first.fills_inserted, second.fills_inserted) == (1, 0)
    assert second.fills_duplicate == 1 and second.positions == []
    assert _count(engine, Fill) == 1
    assert _count(engine, Order) == 1
    assert _count(engine, OrderStatusHistory) == 1
    pos = _position(engine)
    assert pos.quantity == D(1) and pos.realized_pnl == D("-0.1")  # counted once


def test_duplicate_fill_inside_one_batch_counts_once(engine: Engine, ingest: Ingest) -> None:
    e = event(fill("t1", "buy", "1", "100"), "fill:alpha:t1")
    result = ingest([e, e])
    assert result.fills_inserted == 1 and result.fills_duplicate == 1
    assert _position(engine).quantity == D(1)


def test_out_of_order_order_events_never_regress_status_or_filled(
    engine: Engine, ingest: Ingest
) -> None:
    ingest([event(order("c1", "FILLED", "1", avg="101", ts=T0 + 3 * S))])
    ingest([event(order("c1", "PARTIALLY_FILLED", "0.4", ts=T0 + 2 * S))])
    ingest([event(order("c1", "ACKED", ts=T0 + 1 * S, venue_order_id="v9"))])
    # the same story inside one batch, reversed
    ingest([
        event(order("c2", "FILLED", "1", ts=T0 + 3 * S)),
        event(order("c2", "ACKED", ts=T0 + 1 * S)),
        event(order("c2", "NEW", ts=T0)),
    ])  # fmt: skip
    with engine.connect() as conn:
        rows = {r.client_order_id: r for r in conn.execute(select(Order))}
        hist = conn.execute(
            select(OrderStatusHistory.status).where(OrderStatusHistory.client_order_id == "c1")
        ).scalars().all()
    c1 = rows["c1"]
    assert (c1.status, c1.filled_quantity, c1.avg_price) == ("FILLED", D(1), D(101))
    assert c1.venue_order_id == "v9"  # learned from the late event all the same
    assert c1.created_at < c1.updated_at
    assert rows["c2"].status == "FILLED"
    assert sorted(hist) == ["ACKED", "FILLED", "PARTIALLY_FILLED"]  # one row per status


def test_more_fill_at_same_stage_moves_forward(engine: Engine, ingest: Ingest) -> None:
    ingest([event(order("c1", "PARTIALLY_FILLED", "0.2"))])
    ingest([event(order("c1", "PARTIALLY_FILLED", "0.7"))])
    ingest([event(order("c1", "PARTIALLY_FILLED", "0.5"))])
    with engine.connect() as conn:
        assert conn.execute(select(Order.filled_quantity)).scalar_one() == D("0.7")


def test_failed_batch_commits_nothing_and_its_redelivery_counts_once(
    engine: Engine, ingest: Ingest
) -> None:
    good = event(fill("t1", "buy", "1", "100", fee="0.1"), "fill:alpha:t1")
    poison = event(fill("t2", "buy", "0", "100"), "fill:alpha:t2")  # quantity 0: refused
    with pytest.raises(ValueError):
        ingest([good, poison])
    assert _count(engine, Fill) == 0  # rolled back as a whole
    ingest([good])
    ingest([good])
    assert _count(engine, Fill) == 1
    assert _position(engine).quantity == D(1)


def test_positions_from_fills_match_hand_computation(engine: Engine, ingest: Ingest) -> None:
    ingest([event(fill("t1", "buy", "1", "100", fee="0.1"))])
    ingest([event(fill("t2", "sell", "1", "110", fee="0.11"))])
    pos = _position(engine)
    assert (pos.quantity, pos.avg_price, pos.realized_pnl) == (D(0), D(0), D("9.79"))
    assert pos.fees == D("0.21")


def test_mode_and_session_from_the_envelope_key_every_row(engine: Engine, ingest: Ingest) -> None:
    f = fill("t1", "buy", "1", "100")
    ingest([event(f, mode="paper"), event(f, mode="live", session="s2")])
    assert _count(engine, Fill) == 2  # same venue trade id, different modes
    with engine.connect() as conn:
        keys = {(r.mode, r.session) for r in conn.execute(select(Position))}
    assert keys == {("paper", "s1"), ("live", "s2")}


def test_stream_seq_is_stored_and_each_position_change_is_in_history(
    engine: Engine, ingest: Ingest
) -> None:
    batch = [
        (*event(fill("t1", "buy", "1", "100", fee="0.1", ts=T0)), 11),
        (*event(fill("t2", "buy", "1", "110", ts=T0 + S)), 12),
        (*event(fill("t3", "sell", "2", "120", ts=T0 + 2 * S)), 13),
    ]
    ingest(batch)
    ingest(batch)  # redelivered: no fill, no history row
    with engine.connect() as conn:
        seqs = conn.execute(select(Fill.venue_trade_id, Fill.stream_seq).order_by(Fill.id)).all()
        hist = conn.execute(select(PositionHistory).order_by(PositionHistory.id)).all()
    assert [tuple(r) for r in seqs] == [("t1", 11), ("t2", 12), ("t3", 13)]
    assert [(h.venue_trade_id, h.stream_seq, h.quantity, h.avg_price, h.realized_pnl)
            for h in hist] == [
        ("t1", 11, D(1), D(100), D("-0.1")),
        ("t2", 12, D(2), D(105), D("-0.1")),
        ("t3", 13, D(0), D(0), D("29.9")),
    ]  # fmt: skip
    assert hist[-1].ts > hist[0].ts


def test_partial_fills_move_order_and_position_step_by_step(
    engine: Engine, ingest: Ingest
) -> None:
    ingest([event(order("c1", "ACKED", qty="1", venue_order_id="v1"))])
    ingest([event(order("c1", "PARTIALLY_FILLED", "0.3", avg="100", ts=T0 + S)),
            event(fill("t1", "buy", "0.3", "100", coid="c1", ts=T0 + S))])
    mid = _position(engine)
    ingest([event(fill("t2", "buy", "0.7", "101", coid="c1", ts=T0 + 2 * S)),
            event(order("c1", "FILLED", "1", avg="100.7", ts=T0 + 2 * S)),
            event(order("c1", "PARTIALLY_FILLED", "0.3", ts=T0 + S))])  # stale, redelivered
    with engine.connect() as conn:
        o = conn.execute(select(Order)).one()
    assert mid.quantity == D("0.3")
    assert (o.status, o.filled_quantity, o.avg_price, o.venue_order_id) == (
        "FILLED", D(1), D("100.7"), "v1")
    pos = _position(engine)
    assert (pos.quantity, pos.avg_price) == (D(1), D("100.7"))
    assert _count(engine, PositionHistory) == 2


def test_only_new_fills_of_a_mixed_batch_move_positions(engine: Engine, ingest: Ingest) -> None:
    ingest([event(fill("t1", "buy", "1", "100"))])
    result = ingest([event(fill("t1", "buy", "1", "100")), event(fill("t2", "buy", "2", "100")),
                     event(fill("t3", "sell", "1", "100", venue="beta"))])
    assert (result.fills, result.fills_inserted) == (3, 2)
    assert {(p.venue, p.state.quantity) for p in result.positions} == {
        ("alpha", D(3)), ("beta", D(-1))}
    assert _position(engine).quantity == D(3)


def test_concurrent_writers_with_overlapping_batches_do_not_deadlock(engine: Engine) -> None:
    """Four writers (two async pipelines, two SQLAlchemy threads) ingest the same events in
    different orders at once: every fill is booked exactly once, every order ends FILLED."""
    url = engine.url.render_as_string(hide_password=False)
    venues, symbols = ("alpha", "beta"), ("BTC-USDT", "ETH-USDT", "SOL-USDT")
    events = []
    for n in range(120):
        venue, symbol = venues[n % 2], symbols[n % 3]
        events.append(event(order(f"c{n}", "FILLED", "1", venue=venue, symbol=symbol,
                                  ts=T0 + n * S), f"o{n}"))
        events.append(event(order(f"c{n}", "ACKED", venue=venue, symbol=symbol, ts=T0), f"a{n}"))
        events.append(event(fill(f"t{n}", "buy", "1", "100", venue=venue, symbol=symbol,
                                 coid=f"c{n}"), f"f{n}"))
    rng = random.Random(7)
    orders = []
    for _ in range(4):
        shuffled = events[:]
        rng.shuffle(shuffled)
        orders.append([shuffled[i:i + 48] for i in range(0, len(shuffled), 48)])

    async def pipeline(batches: list[list[Any]]) -> None:
        writer = LedgerWriter(url)
        try:
            for b in batches:
                await writer.ingest(b)
        finally:
            await writer.close()

    def threaded(batches: list[list[Any]]) -> None:
        for b in batches:
            ingest_batch(engine, b)

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(
            pipeline(orders[0]), pipeline(orders[1]),
            asyncio.to_thread(threaded, orders[2]), asyncio.to_thread(threaded, orders[3]),
        ), timeout=120)  # fmt: skip

    asyncio.run(run())
    assert _count(engine, Fill) == 120 and _count(engine, PositionHistory) == 120
    with engine.connect() as conn:
        statuses = conn.execute(select(Order.status, func.count()).group_by(Order.status)).all()
        total = conn.execute(select(func.sum(Position.quantity))).scalar_one()
        created = conn.execute(select(func.count()).where(Order.created_at == ns_to_dt(T0))
                               ).scalar_one()
    assert [tuple(r) for r in statuses] == [("FILLED", 120)]
    assert total == D(120) and created == 120


def test_any_text_round_trips_exactly(engine: Engine, ingest: Ingest) -> None:
    odd = 'venue said: "no", {x,y} \\ back\\slash NULL ü\t'
    ev = OrderEvent(
        venue="alpha", symbol="BTC-USDT", client_order_id="c1", side="buy",
        quantity=D("1E-7"), filled_quantity=D(0), status="REJECTED", reason=odd,
        intent_id="NULL", trade_id="",
    )  # fmt: skip
    ingest([event(ev)])
    with engine.connect() as conn:
        row = conn.execute(select(Order.reason, Order.intent_id, Order.trade_id, Order.quantity,
                                  Order.venue_order_id)).one()
    assert tuple(row) == (odd, "NULL", "", D("0.0000001"), None)


def test_the_pipeline_writer_plans_each_statement_once(ledger_url: str) -> None:
    """Generic plans (custom plans of the orders merge cost 4x its execution)."""

    async def run() -> str:
        writer = LedgerWriter(ledger_url)
        try:
            conn = await writer._connection()
            row = await (await conn.execute("SHOW plan_cache_mode")).fetchone()
            assert row is not None
            return str(row[0])
        finally:
            await writer.close()

    assert asyncio.run(run()) == "force_generic_plan"

"""Batch → ledger: idempotency, lifecycle order, atomic batches (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from state_helpers import T0, event, fill, order

from arb_common.ledger import Fill, Order, OrderStatusHistory, Position
from arb_state.ingest import IngestResult, LedgerWriter, ingest_batch

D = Decimal
S = 1_000_000_000  # one second in ns


Ingest = Callable[[Sequence[Any]], IngestResult]


@pytest.fixture(params=["sqlalchemy", "pipeline"])
def ingest(request: pytest.FixtureRequest, engine: Engine) -> Ingest:
    """Both ledger writers: the SQLAlchemy one and the service's async pipeline one."""
    if request.param == "sqlalchemy":
        return lambda batch: ingest_batch(engine, batch)
    url = engine.url.render_as_string(hide_password=False)

    def pipeline(batch: Sequence[Any]) -> IngestResult:
        async def run() -> IngestResult:
            writer = LedgerWriter(url)
            try:
                return await writer.ingest(batch)
            finally:
                await writer.close()

        return asyncio.run(run())

    return pipeline


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _position(engine: Engine, venue: str = "alpha", symbol: str = "BTC-USDT") -> Position:
    with engine.connect() as conn:
        row = conn.execute(
            select(Position).where(Position.venue == venue, Position.symbol == symbol)
        ).one()
    return row  # type: ignore[no-any-return]


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

"""kill + restart against the real state-service side: snapshots saved to and validated by
:class:`arb_state.snapshots.SnapshotStore` on real PostgreSQL (checksum, guard totals,
positions = the ledger's fills up to ``exec_seq``), the ledger fed by the real ingestion from
the same EXEC stream. After the restart RiskGuard, positions, statistics, PnL and the engine's
open trade are exactly what they were, and the positions equal the ledger's to the digit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.engine import Engine
from strategy_helpers import (
    kill,
    new_strategy,
    open_gate,
    order,
    publish_books,
    publish_exec,
    round_trip,
    wait_exec_seq,
    wide_books,
)

from arb_common.bus import Bus, Delivery
from arb_common.ledger import Position, SessionSnapshot
from arb_common.testing import wait_until
from arb_state.ingest import ingest_batch
from arb_state.snapshots import SnapshotStore, register

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(ledger_engine: Engine) -> Engine:
    return ledger_engine


class LedgerSide:
    """The state service's part: EXEC → ledger (durable consumer, ack after commit) and
    ``ctl.state.snapshot_*`` answered by the real SnapshotStore."""

    def __init__(self, bus: Bus, engine: Engine) -> None:
        self.bus = bus
        self.engine = engine
        self.through = 0  # every EXEC event with stream seq <= through is committed
        self.store = SnapshotStore(engine, self.ingested_through, verify_wait_s=5.0)

    async def ingested_through(self) -> int:
        return self.through

    async def handle(self, batch: Sequence[Delivery]) -> None:
        events = [(d.env, d.payload, d.msg.metadata.sequence.stream) for d in batch]
        await asyncio.to_thread(ingest_batch, self.engine, events)
        self.through = max(self.through, *(seq for _, _, seq in events))

    async def start(self) -> None:
        self.bus.consume(stream="EXEC", durable="state-ledger-test",
                         filter_subject=self.bus.subjects.any("exec.>"),
                         batch_handler=self.handle)
        await register(self.bus, self.store)


@pytest.fixture
async def state_side(md_bus: Bus, ledger: Engine) -> AsyncIterator[LedgerSide]:
    side = LedgerSide(md_bus, ledger)
    await side.start()
    yield side


def saved(engine: Engine) -> list[tuple[str, str, str]]:
    t = SessionSnapshot
    with engine.connect() as conn:
        rows = conn.execute(select(t.snapshot_id, t.reason, t.status).order_by(t.id))
        return [(r.snapshot_id, r.reason, r.status) for r in rows]


async def test_kill_and_restart_against_the_ledger_restores_everything_exactly(
        md_bus: Bus, state_side: LedgerSide, ledger: Engine, nats_url: str,
        bus_prefix: str) -> None:
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix)
    await publish_books(md_bus, *wide_books(100))
    await wait_until(lambda: "BTC-USDT" in svc.engine.open_trades(), what="BTC open")
    open_id = svc.engine.open_trades()["BTC-USDT"].trade_id
    await publish_exec(md_bus, *round_trip("E1", symbol="ETH-USDT",
                                           prices=("3000.1", "3001.7", "3000.9", "3000.3")))
    await wait_until(lambda: any(r == "trade_closed" for _, r, _ in saved(ledger)),
                     what="trade_closed snapshot in PostgreSQL", timeout=15)
    # After the snapshot: the BTC open filled (one leg partially), a losing ETH round trip,
    # and half of another one — all to be replayed.
    btc_open = [f for f in round_trip(open_id, base=40) if f.intent_id.endswith(":open")]
    await publish_exec(
        md_bus, *btc_open,
        order("alpha", "buy", open_id, "open", "0.01"),
        order("beta", "sell", open_id, "open", "0.01"),
        *round_trip("E2", symbol="ETH-USDT", base=10, prices=("3000", "2999.3", "3001", "2990")),
        *round_trip("E3", symbol="ETH-USDT", base=20, prices=("3000.37", "3002.11", "3001",
                                                              "3000"))[:3],
    )
    await wait_exec_seq(svc, md_bus)
    await wait_until(lambda: state_side.through >= svc.memory.exec_seq, what="ledger caught up")
    await svc.saver.idle()
    before = svc.memory.state()
    open_before = svc.engine.open_trades()
    await kill(svc)
    last_saved = saved(ledger)[-1][0]

    again = await new_strategy(nats_url, bus_prefix)
    try:
        assert again.restored_from == last_saved  # the latest snapshot passed validation
        assert all(status != "invalid" for _, _, status in saved(ledger)), saved(ledger)
        assert again.memory.state() == before
        assert again.engine.open_trades() == open_before
        assert open_before["BTC-USDT"].trade_id == open_id
        # positions equal the ledger's (rounded per fill the same way) to the last digit
        with ledger.connect() as conn:
            t = Position
            rows = conn.execute(select(t.venue, t.symbol, t.quantity, t.avg_price,
                                       t.realized_pnl, t.fees).where(t.session == "itest"))
            ledger_pos = {(r.venue, r.symbol): (r.quantity, r.avg_price, r.realized_pnl, r.fees)
                          for r in rows}
        mine = {(p.venue, p.symbol): (p.quantity, p.avg_price, p.realized_pnl, p.fees)
                for p in again.memory.positions.snaps()}
        assert mine == ledger_pos
        # the gauges operators watch come back too
        for symbol, realized in again.guard.realized.items():
            assert REGISTRY.get_sample_value("arb_strategy_realized_pnl",
                                             {"symbol": symbol}) == float(realized)
        # and a snapshot of the restored state validates against the ledger as well
        reply = await again.saver.save("manual")
        loaded = await state_side.store.load("strategy", "paper", "itest")
        assert loaded["ok"] and loaded["snapshot"]["snapshot_id"] == reply.snapshot_id
        assert loaded["skipped"] == []
    finally:
        await again.bus.close()

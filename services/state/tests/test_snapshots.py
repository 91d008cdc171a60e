"""Snapshots in the ledger: save (strict, idempotent, capped), load (validated, newest valid
first), and the ctl.state.snapshot_* request/reply on real NATS — on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine

from arb_common.ledger import (
    Fill,
    MetricsSnapshot,
    PositionSnapshot,
    RiskGuardSnapshot,
    SessionSnapshot,
)
from arb_common.messages import FillEvent
from arb_common.positions import replay
from arb_common.snapshots import (
    PortfolioMetrics,
    PositionSnap,
    Snapshot,
    SymbolMetrics,
    checksum,
    snapshot_id,
    to_wire,
)
from arb_common.testing import connected_bus
from arb_state.snapshots import SnapshotStore, ack_floor, register

T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000


@dataclass(frozen=True)
class F:
    """A fill as the ledger stores it; ``seq`` is its EXEC stream sequence."""

    seq: int | None
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal = Decimal("0")
    fee_asset: str = "USDT"
    venue: str = "alpha"
    symbol: str = "BTC-USDT"


def f(seq: int | None, side: str, qty: str, price: str, fee: str = "0", **kw: Any) -> F:
    return F(seq, side, Decimal(qty), Decimal(price), Decimal(fee), **kw)


FILLS = [
    f(1, "buy", "1", "100", fee="0.1"),
    f(2, "sell", "1", "101", venue="beta", fee="0.001", fee_asset="BTC"),
    f(3, "sell", "0.4", "110", fee="0.044"),
    f(4, "buy", "2", "20", symbol="ETH-USDT", venue="beta"),
]


def make_doc(fills: Iterable[F], exec_seq: int, *, taken_ts: int = T0, mode: str = "paper",
             session: str = "s1", component: str = "strategy", **changes: Any) -> Snapshot:
    """A consistent snapshot of ``fills`` (positions, metrics and guard agree)."""
    replayed = replay(fills)
    positions = [
        PositionSnap(venue=v, symbol=s, quantity=st.quantity, avg_price=st.avg_price,
                     realized_pnl=st.realized_pnl, fees=st.fees, fills=n)
        for (v, s), (st, n) in sorted(replayed.items())
    ]  # fmt: skip
    realized: dict[str, Decimal] = {}
    guard_pos: dict[str, dict[str, str]] = {}
    for p in positions:
        realized[p.symbol] = realized.get(p.symbol, Decimal(0)) + p.realized_pnl
        guard_pos.setdefault(p.symbol, {})[p.venue] = str(p.quantity)
    metrics = [SymbolMetrics(symbol=s, realized_pnl=r, trades=1, wins=int(r > 0),
                             losses=int(r <= 0), gross_profit=max(r, Decimal(0)),
                             gross_loss=max(-r, Decimal(0))) for s, r in sorted(realized.items())]
    total = sum(realized.values(), Decimal(0))
    snap = Snapshot(
        snapshot_id=snapshot_id(component, mode, session, exec_seq, taken_ts),
        component=component, mode=mode, session=session, reason="periodic", taken_ts=taken_ts,
        exec_seq=exec_seq, positions=positions, metrics=metrics,
        portfolio=PortfolioMetrics(realized_pnl=total, trades=len(metrics),
                                   wins=sum(m.wins for m in metrics),
                                   losses=sum(m.losses for m in metrics),
                                   peak=max(total, Decimal(0)), max_drawdown=Decimal(0)),
        guard={"v": 1, "day": 19675, "daily_pnl": str(total),
               "realized": {s: str(r) for s, r in realized.items()}, "positions": guard_pos,
               "prices": {}},
        engine={"open": {}}, pnl={"equity": "1000", "ratio": 0.25},
    )  # fmt: skip
    return msgspec.structs.replace(snap, **changes) if changes else snap


def put_fills(engine: Engine, fills: Iterable[F], *, mode: str = "paper",
              session: str = "s1") -> None:
    rows = [
        {"mode": mode, "session": session, "venue": x.venue, "symbol": x.symbol,
         "client_order_id": f"c{i}", "venue_trade_id": f"t{x.seq}-{i}-{session}",
         "side": x.side, "quantity": x.quantity, "price": x.price, "fee": x.fee,
         "fee_asset": x.fee_asset, "ts": datetime(2024, 5, 1, tzinfo=UTC),
         "stream_seq": x.seq}
        for i, x in enumerate(fills)
    ]  # fmt: skip
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(Fill), rows)


class Progress:
    """The ledger's EXEC ack floor, as the test says it is."""

    def __init__(self, value: int = 10**9) -> None:
        self.value = value

    async def __call__(self) -> int:
        return self.value


def store(engine: Engine, progress: Progress | None = None, **kw: Any) -> SnapshotStore:
    kw.setdefault("verify_wait_s", 0.2)
    return SnapshotStore(engine, progress or Progress(), **kw)


def rows_of(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)))


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def invalid_count(reason: str) -> float:
    return REGISTRY.get_sample_value("arb_state_snapshots_invalid_total",
                                     {"reason": reason}) or 0.0


async def save_all(s: SnapshotStore, *docs: Snapshot) -> None:
    for d in docs:
        reply = await s.save(to_wire(d))
        assert reply["ok"], reply


# ---------------------------------------------------------------- save


async def test_save_then_load_returns_the_same_document_and_writes_its_rows(
    engine: Engine,
) -> None:
    put_fills(engine, FILLS)
    doc = make_doc(FILLS, 4)
    s = store(engine)
    reply = await s.save(to_wire(doc))
    assert reply == {"ok": True, "snapshot_id": doc.snapshot_id, "duplicate": False}
    assert count(engine, PositionSnapshot) == 3
    assert count(engine, MetricsSnapshot) == 3  # BTC, ETH, portfolio
    assert count(engine, RiskGuardSnapshot) == 1
    (guard,) = rows_of(engine, "SELECT day, daily_pnl, state FROM risk_guard_snapshots")
    assert guard.day == 19675 and guard.state == doc.guard

    loaded = await s.load("strategy", "paper", "s1")
    assert loaded["ok"] and loaded["skipped"] == []
    assert loaded["checksum"] == checksum(doc)
    assert msgspec.convert(loaded["snapshot"], Snapshot) == doc


async def test_save_is_idempotent_on_snapshot_id(engine: Engine) -> None:
    s = store(engine)
    doc = make_doc(FILLS[:1], 1)
    assert (await s.save(to_wire(doc)))["duplicate"] is False
    again = await s.save(to_wire(doc))
    assert again == {"ok": True, "snapshot_id": doc.snapshot_id, "duplicate": True}
    assert count(engine, SessionSnapshot) == 1 and count(engine, PositionSnapshot) == 1

    other = make_doc(FILLS[:2], 1)  # same id, different content: refused, nothing changes
    assert other.snapshot_id == doc.snapshot_id
    clash = await s.save(to_wire(other))
    assert clash["ok"] is False and "different checksum" in clash["error"]
    assert count(engine, PositionSnapshot) == 1


def _tampered(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "says"), [
    (["checksum"], "0" * 64, "checksum"),
    (["snapshot", "positions", 0, "quantity"], "1.5", "checksum"),  # changed after hashing
    (["snapshot", "positions", 0, "fills"], "two", "$.positions[0].fills"),
    (["snapshot", "exec_seq"], _DELETE, "exec_seq"),
    (["snapshot", "v"], 2, "version"),
    (["snapshot", "reason"], "whim", "$.reason"),
    (["snapshot"], [], "snapshot"),
])  # fmt: skip
async def test_save_rejects_a_malformed_request_saying_what_and_where(
    engine: Engine, path: list[Any], value: Any, says: str
) -> None:
    body = _tampered(to_wire(make_doc(FILLS[:1], 1)), path, value)
    reply = await store(engine).save(body)
    assert reply["ok"] is False and says in reply["error"], reply
    assert count(engine, SessionSnapshot) == 0


async def test_save_rejects_a_guard_without_day_or_daily_pnl(engine: Engine) -> None:
    doc = make_doc(FILLS[:1], 1)
    bad = msgspec.structs.replace(doc, guard={**doc.guard, "daily_pnl": None})
    reply = await store(engine).save(to_wire(bad))
    assert reply["ok"] is False and "guard.daily_pnl" in reply["error"]


async def test_save_refuses_a_document_that_would_not_verify_after_jsonb(
    engine: Engine,
) -> None:
    # JSONB keeps 1e20 as the number 100000000000000000000, which reads back as an integer:
    # stored, it could never pass its checksum again. Refused now, nothing stored.
    doc = make_doc([], 0, pnl={"huge": 1e20})
    reply = await store(engine).save(to_wire(doc))
    assert reply["ok"] is False and "JSONB" in reply["error"] and "retryable" not in reply
    assert count(engine, SessionSnapshot) == 0
    ok = make_doc([], 0, pnl={"small": 0.1, "tiny": 1e-9, "big": 12345.678, "n": -3})
    assert (await store(engine).save(to_wire(ok)))["ok"] is True
    assert (await store(engine).load("strategy", "paper", "s1"))["snapshot"] is not None


async def test_save_keeps_only_the_newest_snapshots_of_a_running_session(
    engine: Engine,
) -> None:
    s = store(engine, keep=3, keep_running=4)
    docs = [make_doc([], 0, taken_ts=T0 + i * SEC) for i in range(6)]
    await save_all(s, *docs)
    kept = [r.snapshot_id for r in rows_of(
        engine, "SELECT snapshot_id FROM session_snapshots ORDER BY taken_at")]
    assert kept == [d.snapshot_id for d in docs[2:]]
    assert count(engine, RiskGuardSnapshot) == 4  # children went with them


# ---------------------------------------------------------------- load


async def test_load_without_any_snapshot_returns_null(engine: Engine) -> None:
    reply = await store(engine).load("strategy", "paper", "s1")
    assert reply == {"ok": True, "snapshot": None, "checksum": None, "skipped": []}


async def test_load_returns_the_newest_of_its_own_mode_and_session_only(engine: Engine) -> None:
    put_fills(engine, FILLS)
    s = store(engine)
    mine_old, mine_new = make_doc(FILLS[:2], 2, taken_ts=T0), make_doc(FILLS, 4, taken_ts=T0 + SEC)
    await save_all(s, mine_old, mine_new,
                   make_doc([], 0, taken_ts=T0 + 5 * SEC, mode="live"),
                   make_doc([], 0, taken_ts=T0 + 5 * SEC, session="s2"))
    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"]["snapshot_id"] == mine_new.snapshot_id


async def test_load_skips_snapshot_with_bad_checksum_and_uses_previous(engine: Engine) -> None:
    put_fills(engine, FILLS)
    s = store(engine)
    good, bad = make_doc(FILLS[:2], 2, taken_ts=T0), make_doc(FILLS, 4, taken_ts=T0 + SEC)
    await save_all(s, good, bad)
    with engine.begin() as conn:  # bit rot in the stored document
        conn.execute(text("UPDATE session_snapshots SET payload = jsonb_set(payload, "
                          "'{positions,0,quantity}', '\"7\"') WHERE snapshot_id = :id"),
                     {"id": bad.snapshot_id})
    before = invalid_count("checksum")

    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"]["snapshot_id"] == good.snapshot_id
    assert [x["snapshot_id"] for x in reply["skipped"]] == [bad.snapshot_id]
    assert reply["skipped"][0]["reason"].startswith("checksum")
    (row,) = rows_of(engine, f"SELECT status, invalid_reason FROM session_snapshots "
                             f"WHERE snapshot_id = '{bad.snapshot_id}'")
    assert row.status == "invalid" and row.invalid_reason.startswith("checksum")
    assert invalid_count("checksum") == before + 1
    # Judged once: the next load goes straight to the valid one.
    assert (await s.load("strategy", "paper", "s1"))["skipped"] == []


async def test_load_skips_snapshot_whose_positions_disagree_with_ledger_fills(
    engine: Engine,
) -> None:
    put_fills(engine, FILLS)
    s = store(engine)
    good = make_doc(FILLS[:2], 2, taken_ts=T0)
    # Claims exec_seq 4 but missed fill 3: internally consistent, checksum fine, wrong.
    missed = make_doc([FILLS[0], FILLS[1], FILLS[3]], 4, taken_ts=T0 + SEC)
    await save_all(s, good, missed)
    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"]["snapshot_id"] == good.snapshot_id
    (skip,) = reply["skipped"]
    assert skip["snapshot_id"] == missed.snapshot_id
    assert skip["reason"].startswith("positions: alpha/BTC-USDT: 1 fills in the snapshot, 2")


async def test_load_replays_only_bus_fills_up_to_exec_seq_in_stream_order(
    engine: Engine,
) -> None:
    # Stored out of order, plus one fill written outside the bus (no stream_seq) and one
    # after the snapshot: neither belongs to it.
    put_fills(engine, [FILLS[2], FILLS[0], f(None, "buy", "5", "1"), FILLS[1],
                       f(9, "buy", "3", "90")])
    s = store(engine)
    doc = make_doc(FILLS[:3], 3)
    await save_all(s, doc)
    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"]["snapshot_id"] == doc.snapshot_id, reply["skipped"]


@pytest.mark.parametrize(("change", "says"), [
    ({"guard_positions": {"BTC-USDT": {"alpha": "0.5", "beta": "-1"}}},
     "guard.positions[BTC-USDT][alpha]"),
    ({"guard_realized": {"BTC-USDT": "0"}}, "guard.realized[BTC-USDT]"),
    ({"portfolio_trades": 9}, "portfolio.trades"),
])  # fmt: skip
async def test_load_skips_snapshot_with_inconsistent_guard_totals(
    engine: Engine, change: dict[str, Any], says: str
) -> None:
    put_fills(engine, FILLS[:2])
    good = make_doc(FILLS[:1], 1, taken_ts=T0)
    latest = make_doc(FILLS[:2], 2, taken_ts=T0 + SEC)
    guard = dict(latest.guard)
    if "guard_positions" in change:
        guard["positions"] = change["guard_positions"]
    if "guard_realized" in change:
        guard["realized"] = change["guard_realized"]
    portfolio = latest.portfolio
    if "portfolio_trades" in change:
        portfolio = msgspec.structs.replace(portfolio, trades=change["portfolio_trades"])
    bad = msgspec.structs.replace(latest, guard=guard, portfolio=portfolio)
    s = store(engine)
    await save_all(s, good, bad)
    before = invalid_count("guard")
    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"]["snapshot_id"] == good.snapshot_id
    assert reply["skipped"][0]["reason"].startswith(f"guard: {says}"), reply["skipped"]
    assert invalid_count("guard") == before + 1


async def test_load_skips_a_row_whose_identity_disagrees_with_its_document(
    engine: Engine,
) -> None:
    s = store(engine)
    doc = make_doc([], 0)
    await save_all(s, doc)
    with engine.begin() as conn:  # a row that says s2 but holds s1's document
        conn.execute(text("UPDATE session_snapshots SET session = 's2'"))
    reply = await s.load("strategy", "paper", "s2")
    assert reply["snapshot"] is None
    assert reply["skipped"][0]["reason"].startswith("mismatch")


async def test_load_looks_at_no_more_than_twenty_snapshots(engine: Engine) -> None:
    s = store(engine, keep_running=100)
    docs = [make_doc([], 0, taken_ts=T0 + i * SEC) for i in range(22)]
    await save_all(s, *docs)
    with engine.begin() as conn:
        conn.execute(text("UPDATE session_snapshots SET checksum = 'rot'"))
    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"] is None and len(reply["skipped"]) == 20
    (n,) = rows_of(engine, "SELECT count(*) FROM session_snapshots WHERE status = 'invalid'")
    assert n[0] == 20


async def test_load_waits_for_ledger_ingest(engine: Engine) -> None:
    put_fills(engine, FILLS[:3])
    progress = Progress(3)
    s = store(engine, progress, verify_wait_s=10.0)
    await save_all(s, make_doc(FILLS[:3], 3, taken_ts=T0), make_doc(FILLS, 4, taken_ts=T0 + SEC))

    async def ledger_catches_up() -> None:
        await asyncio.sleep(0.3)
        put_fills(engine, FILLS[3:])
        progress.value = 4

    catch_up = asyncio.create_task(ledger_catches_up())
    reply = await s.load("strategy", "paper", "s1")
    await catch_up
    assert reply["snapshot"]["exec_seq"] == 4 and reply["skipped"] == []


async def test_load_skips_without_condemning_when_the_ledger_stays_behind(
    engine: Engine,
) -> None:
    put_fills(engine, FILLS[:3])
    progress = Progress(3)
    s = store(engine, progress, verify_wait_s=0.2)
    older, newest = make_doc(FILLS[:3], 3, taken_ts=T0), make_doc(FILLS, 4, taken_ts=T0 + SEC)
    await save_all(s, older, newest)
    reply = await s.load("strategy", "paper", "s1")
    assert reply["snapshot"]["snapshot_id"] == older.snapshot_id
    assert reply["skipped"][0]["reason"].startswith("ledger_behind")
    (row,) = rows_of(engine, f"SELECT status FROM session_snapshots "
                             f"WHERE snapshot_id = '{newest.snapshot_id}'")
    assert row.status == "stored"  # not its fault: usable once the ledger caught up
    put_fills(engine, FILLS[3:])
    progress.value = 4
    assert (await s.load("strategy", "paper", "s1"))["snapshot"]["exec_seq"] == 4


# ---------------------------------------------------------------- request / reply


async def test_snapshot_requests_round_trip_over_nats_and_malformed_ones_get_errors(
    engine: Engine, nats_url: str, bus_prefix: str, cleanup_streams: None
) -> None:
    put_fills(engine, FILLS)
    doc = make_doc(FILLS, 4)
    async with connected_bus(nats_url, bus_prefix, "state") as bus:
        await register(bus, store(engine))
        save_subj = bus.subjects.ctl("state", "snapshot_save")
        load_subj = bus.subjects.ctl("state", "snapshot_load")

        async def ask(subject: str, body: bytes) -> dict[str, Any]:
            msg = await bus.nc.request(subject, body, timeout=5)
            reply: dict[str, Any] = json.loads(msg.data)
            return reply

        for body, says in [
            (b"not json", "request"),
            (b"[]", "request"),
            (b'{"snapshot": {}, "checksum": "x"}', "snapshot"),
            (b"", "request"),
        ]:
            reply = await ask(save_subj, body)
            assert reply["ok"] is False and says in reply["error"], (body, reply)
        for body, says in [(b'{"mode": "paper"}', "component"),
                           (b'{"component": "strategy", "mode": 1, "session": "s1"}', "$.mode")]:
            reply = await ask(load_subj, body)
            assert reply["ok"] is False and says in reply["error"], (body, reply)

        saved = await ask(save_subj, json.dumps(to_wire(doc)).encode())
        assert saved == {"ok": True, "snapshot_id": doc.snapshot_id, "duplicate": False}
        loaded = await ask(load_subj, b'{"component": "strategy", "mode": "paper", '
                                      b'"session": "s1"}')
        assert loaded["ok"] and loaded["checksum"] == checksum(doc)
        assert msgspec.convert(loaded["snapshot"], Snapshot) == doc


async def test_snapshot_request_while_the_ledger_is_down_says_so_and_can_be_retried(
    nats_url: str, bus_prefix: str, cleanup_streams: None
) -> None:
    from sqlalchemy import create_engine

    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                         connect_args={"connect_timeout": 1})
    async with connected_bus(nats_url, bus_prefix, "state") as bus:
        await register(bus, store(dead))
        msg = await bus.nc.request(bus.subjects.ctl("state", "snapshot_save"),
                                   json.dumps(to_wire(make_doc([], 0))).encode(), timeout=10)
        reply = json.loads(msg.data)
        assert reply["ok"] is False and reply["retryable"] is True
        assert reply["error"].startswith("ledger:")
        msg = await bus.nc.request(bus.subjects.ctl("state", "snapshot_load"),
                                   b'{"component": "strategy", "mode": "paper", '
                                   b'"session": "s1"}', timeout=10)
        assert json.loads(msg.data)["retryable"] is True
    dead.dispose()


async def test_ack_floor_follows_the_ledger_consumer_acks(
    nats_url: str, bus_prefix: str, cleanup_streams: None
) -> None:
    async with connected_bus(nats_url, bus_prefix, "state") as bus:
        through = ack_floor(bus)
        assert await through() == 0  # no consumer yet: nothing ingested
        release = asyncio.Event()

        async def handler(env: Any, payload: Any) -> None:
            await release.wait()  # "the commit" has not happened yet

        for i in range(3):
            fill = FillEvent(venue="alpha", symbol="BTC-USDT", client_order_id="c",
                             venue_trade_id=f"t{i}", side="buy", quantity=Decimal(1),
                             price=Decimal(100), fee=Decimal(0), fee_asset="USDT", ts=T0)
            await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), fill, f"fill:alpha:t{i}")
        bus.consume(stream="EXEC", durable="state-ledger",
                    filter_subject=bus.subjects.any("exec.>"), handler=handler)
        await asyncio.sleep(0.5)
        assert await through() == 0  # delivered, not acked
        release.set()
        for _ in range(100):
            if await through() == 3:
                break
            await asyncio.sleep(0.05)
        assert await through() == 3

"""Snapshot storage in the ledger and validation on load (``ctl.state.snapshot_save`` /
``ctl.state.snapshot_load``, see docs/CONTRACTS.md "Memory").

Save: the request is decoded strictly and its checksum verified; the document (canonical
JSONB), its positions, metrics and RiskGuard rows are written in one transaction, idempotent
on ``snapshot_id``; the running session is capped at ``snapshot_keep_running``.

Load, newest first (at most :data:`MAX_CANDIDATES`), the first snapshot passing every check
wins:

1. ``checksum``: recomputed from the stored payload;
2. ``schema`` / ``mismatch``: strict decode; the row's mode, session, component, id and
   exec_seq equal the document's;
3. ``positions``: the positions equal the replay of the ledger's fills of that mode+session
   with ``stream_seq <= exec_seq`` (after waiting up to ``verify_wait_s`` for the ledger to
   have ingested that far; if it has not, the snapshot is skipped, not condemned);
4. ``guard``: RiskGuard and metrics totals agree (checked before 3: it needs no ledger).

A snapshot failing a check is marked ``status='invalid'`` with the reason, counted, logged
at ERROR, and the previous one is tried. The document checks themselves are pure and live
in :mod:`arb_common.snapshots` (the producer can run them before saving).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram
from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from arb_common.bus import Bus
from arb_common.errors import DecodeError
from arb_common.ledger import (
    Fill,
    MetricsSnapshot,
    PositionSnapshot,
    RiskGuardSnapshot,
    SessionSnapshot,
)
from arb_common.positions import replay
from arb_common.snapshots import (
    Snapshot,
    decode_load_request,
    decode_save_request,
    decode_snapshot,
    duplicate_keys,
    guard_inconsistency,
    payload_checksum,
    position_mismatch,
    to_payload,
)

from .ingest import ns_to_dt
from .retention import prune_running

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 20
_POLL_S = 0.05

SAVES = Counter("arb_state_snapshot_saves_total", "Snapshot save requests", ["result"])
LOADS = Counter("arb_state_snapshot_loads_total", "Snapshot load requests", ["result"])
LOAD_SECONDS = Histogram(
    "arb_state_snapshot_load_seconds", "Time to find and validate the latest valid snapshot",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
INVALID = Counter("arb_state_snapshots_invalid_total",
                  "Snapshots found invalid on load (marked status='invalid')", ["reason"])
BEHIND = Counter("arb_state_snapshot_verify_timeouts_total",
                 "Snapshots skipped on load because the ledger had not ingested their exec_seq")
BAD_REQUESTS = Counter("arb_state_snapshot_requests_rejected_total",
                       "Malformed snapshot requests", ["verb"])

IngestedThrough = Callable[[], Awaitable[int]]


@dataclass(frozen=True)
class _Candidate:
    snapshot_id: str
    mode: str
    session: str
    component: str
    exec_seq: int
    checksum: str
    payload: Any


@dataclass(frozen=True)
class _Verdict:
    snap: Snapshot | None  # the document when valid
    reason: str = ""  # metric label: checksum / schema / mismatch / guard / positions / ...
    detail: str = ""
    condemn: bool = True  # mark invalid (False: skipped, may be valid later)


def _guard_row(snap: Snapshot) -> dict[str, Any]:
    """The ``risk_guard_snapshots`` row; :class:`DecodeError` if day / daily_pnl are unusable."""
    day, daily = snap.guard.get("day"), snap.guard.get("daily_pnl")
    if not isinstance(day, int) or isinstance(day, bool):
        raise DecodeError(f"guard.day must be an integer, got {day!r} - at `$.guard.day`",
                          "snapshot")
    try:
        daily_pnl = Decimal(str(daily)) if isinstance(daily, str | int) else None
    except ArithmeticError:
        daily_pnl = None
    if daily_pnl is None or not daily_pnl.is_finite():
        raise DecodeError(f"guard.daily_pnl must be a decimal string, got {daily!r} "
                          "- at `$.guard.daily_pnl`", "snapshot")
    return {"snapshot_id": snap.snapshot_id, "day": day, "daily_pnl": daily_pnl,
            "state": snap.guard}


# ---------------------------------------------------------------- pure checks


def check_document(row: _Candidate) -> _Verdict:
    """Checks that need nothing but the row: checksum, schema, identity, guard totals."""
    if payload_checksum(row.payload) != row.checksum:
        return _Verdict(None, "checksum", "stored payload does not match its checksum "
                        f"{row.checksum}")
    try:
        snap = decode_snapshot(msgspec.json.encode(row.payload))
    except msgspec.MsgspecError as exc:
        return _Verdict(None, "schema", str(exc))
    ours = (row.snapshot_id, row.mode, row.session, row.component, row.exec_seq)
    theirs = (snap.snapshot_id, snap.mode, snap.session, snap.component, snap.exec_seq)
    if ours != theirs:
        return _Verdict(None, "mismatch", f"row (id, mode, session, component, exec_seq) "
                        f"{ours} but document {theirs}")
    problem = duplicate_keys(snap)
    if problem:
        return _Verdict(None, "schema", problem)
    problem = guard_inconsistency(snap)
    if problem:
        return _Verdict(None, "guard", problem)
    return _Verdict(snap)


# ---------------------------------------------------------------- the store


class SnapshotStore:
    """Snapshots in the ledger (sync SQLAlchemy engine, used from worker threads)."""

    def __init__(
        self,
        engine: Engine,
        ingested_through: IngestedThrough,
        *,
        keep: int = 3,
        keep_running: int = 200,
        verify_wait_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.ingested_through = ingested_through
        self.keep = keep
        self.keep_running = keep_running
        self.verify_wait_s = verify_wait_s

    # ------------------------------------------------------------ save
    async def save(self, body: bytes | str | dict[str, Any]) -> dict[str, Any]:
        """Store one snapshot; the reply of ``ctl.state.snapshot_save``."""
        try:
            snap, digest = decode_save_request(body)
            _guard_row(snap)
        except DecodeError as exc:
            SAVES.labels("rejected").inc()
            BAD_REQUESTS.labels("snapshot_save").inc()
            logger.warning("snapshot save rejected error=%s", exc)
            return {"ok": False, "error": str(exc)}
        problem = guard_inconsistency(snap)
        if problem:  # stored anyway (the contract); load will refuse it
            logger.error("snapshot saved with inconsistent guard snapshot_id=%s problem=%s",
                         snap.snapshot_id, problem)
        try:
            outcome = await asyncio.to_thread(self._save_sync, snap, digest)
        except DecodeError as exc:
            SAVES.labels("rejected").inc()
            BAD_REQUESTS.labels("snapshot_save").inc()
            logger.error("snapshot save rejected snapshot_id=%s error=%s", snap.snapshot_id, exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the ledger is down: the caller retries
            SAVES.labels("error").inc()
            logger.warning("snapshot save failed snapshot_id=%s error=%r", snap.snapshot_id, exc)
            return {"ok": False, "error": f"ledger: {type(exc).__name__}: {exc}"[:400],
                    "retryable": True}
        SAVES.labels(outcome).inc()
        if outcome == "conflict":
            return {"ok": False, "error": f"snapshot_id {snap.snapshot_id} is already stored "
                    "with a different checksum"}
        logger.info("snapshot %s snapshot_id=%s exec_seq=%d reason=%s", outcome,
                    snap.snapshot_id, snap.exec_seq, snap.reason)
        return {"ok": True, "snapshot_id": snap.snapshot_id,
                "duplicate": outcome == "duplicate"}

    def _save_sync(self, snap: Snapshot, digest: str) -> str:
        payload = to_payload(snap)
        t = SessionSnapshot
        stmt = pg_insert(t).values(
            snapshot_id=snap.snapshot_id, mode=snap.mode, session=snap.session,
            component=snap.component, reason=snap.reason, taken_at=ns_to_dt(snap.taken_ts),
            exec_seq=snap.exec_seq, checksum=digest, payload=payload,
        ).on_conflict_do_nothing(index_elements=[t.snapshot_id]).returning(t.payload)
        with self.engine.begin() as conn:
            stored = conn.execute(stmt).first()
            if stored is None:
                have = conn.execute(select(t.checksum).where(t.snapshot_id == snap.snapshot_id))
                return "duplicate" if have.scalar_one() == digest else "conflict"
            if payload_checksum(stored.payload) != digest:
                # e.g. a float >= 1e16 comes back from JSONB as an integer: refuse now rather
                # than store something that will never verify (the transaction rolls back).
                raise DecodeError("the document does not survive JSONB unchanged (its "
                                  "checksum changes); keep engine/pnl/guard values as strings, "
                                  "integers or floats below 1e16", "snapshot")
            _insert_children(conn, snap)
            prune_running(conn, snap.mode, snap.session, snap.component,
                          self.keep_running, self.keep)
        return "stored"

    # ------------------------------------------------------------ load
    async def load(self, component: str, mode: str, session: str) -> dict[str, Any]:
        """The latest valid snapshot; the reply of ``ctl.state.snapshot_load``."""
        started = time.perf_counter()
        try:
            reply = await self._load(component, mode, session)
        except Exception as exc:  # noqa: BLE001 - the ledger is down: the caller retries
            LOADS.labels("error").inc()
            logger.warning("snapshot load failed component=%s mode=%s session=%s error=%r",
                           component, mode, session, exc)
            return {"ok": False, "error": f"ledger: {type(exc).__name__}: {exc}"[:400],
                    "retryable": True}
        finally:
            LOAD_SECONDS.observe(time.perf_counter() - started)
        LOADS.labels("found" if reply["snapshot"] is not None else "none").inc()
        return reply

    async def _load(self, component: str, mode: str, session: str) -> dict[str, Any]:
        rows = await asyncio.to_thread(self._candidates, component, mode, session)
        skipped: list[dict[str, str]] = []
        deadline = time.monotonic() + self.verify_wait_s
        ledger = _LedgerFills()
        for row in rows:
            verdict = check_document(row)
            if verdict.snap is not None:
                verdict = await self._check_ledger(verdict.snap, deadline, ledger)
            if verdict.snap is not None:
                logger.info("snapshot loaded snapshot_id=%s exec_seq=%d skipped=%d",
                            row.snapshot_id, row.exec_seq, len(skipped))
                return {"ok": True, "snapshot": to_payload(verdict.snap),
                        "checksum": row.checksum, "skipped": skipped}
            skipped.append({"snapshot_id": row.snapshot_id,
                            "reason": f"{verdict.reason}: {verdict.detail}"[:500]})
            if verdict.condemn:
                await self._condemn(row, verdict)
        return {"ok": True, "snapshot": None, "checksum": None, "skipped": skipped}

    def _candidates(self, component: str, mode: str, session: str) -> list[_Candidate]:
        t = SessionSnapshot
        stmt = (
            select(t.snapshot_id, t.mode, t.session, t.component, t.exec_seq, t.checksum,
                   t.payload)
            .where(t.component == component, t.mode == mode, t.session == session,
                   t.status != "invalid")
            .order_by(t.taken_at.desc(), t.exec_seq.desc(), t.id.desc())
            .limit(MAX_CANDIDATES)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [_Candidate(*r) for r in conn.execute(stmt)]

    async def _check_ledger(self, snap: Snapshot, deadline: float,
                            ledger: _LedgerFills) -> _Verdict:
        through = await self._wait_ingested(snap.exec_seq, deadline)
        if through < snap.exec_seq:
            BEHIND.inc()
            logger.warning("snapshot skipped, ledger behind snapshot_id=%s exec_seq=%d "
                           "ingested_through=%d", snap.snapshot_id, snap.exec_seq, through)
            return _Verdict(None, "ledger_behind", f"ledger ingested through {through}, "
                            f"snapshot exec_seq {snap.exec_seq}", condemn=False)
        if ledger.through < snap.exec_seq:  # candidates go newest first: usually one read
            ledger.rows = await asyncio.to_thread(self._fills, snap.mode, snap.session,
                                                  snap.exec_seq)
            ledger.through = snap.exec_seq
        fills = [f for f in ledger.rows if f.stream_seq <= snap.exec_seq]
        problem = position_mismatch(snap, replay(fills))
        return _Verdict(None, "positions", problem) if problem else _Verdict(snap)

    async def _wait_ingested(self, exec_seq: int, deadline: float) -> int:
        through = -1
        while True:
            try:
                through = await self.ingested_through()
            except Exception as exc:  # noqa: BLE001 - unknown progress: treat as behind
                logger.warning("ledger ingest progress unknown error=%r", exc)
            if through >= exec_seq or time.monotonic() >= deadline:
                return through
            await asyncio.sleep(_POLL_S)

    def _fills(self, mode: str, session: str, exec_seq: int) -> list[Any]:
        # NULL stream_seq: written outside the bus path, so no EXEC consumer applied it.
        f = Fill
        stmt = (
            select(f.venue, f.symbol, f.side, f.quantity, f.price, f.fee, f.fee_asset,
                   f.stream_seq)
            .where(f.mode == mode, f.session == session, f.stream_seq.is_not(None),
                   f.stream_seq <= exec_seq)
            .order_by(f.stream_seq, f.id)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return list(conn.execute(stmt))

    async def _condemn(self, row: _Candidate, verdict: _Verdict) -> None:
        INVALID.labels(verdict.reason).inc()
        logger.error("snapshot invalid snapshot_id=%s mode=%s session=%s reason=%s detail=%s",
                     row.snapshot_id, row.mode, row.session, verdict.reason, verdict.detail)
        reason = f"{verdict.reason}: {verdict.detail}"[:1000]
        await asyncio.to_thread(self._mark_invalid, row.snapshot_id, reason)

    def _mark_invalid(self, snapshot_id: str, reason: str) -> None:
        t = SessionSnapshot
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.snapshot_id == snapshot_id)
                         .values(status="invalid", invalid_reason=reason))

    # ------------------------------------------------------------ request/reply
    async def on_save(self, msg: Msg) -> None:
        await _answer(msg, "snapshot_save", lambda: self.save(msg.data))

    async def on_load(self, msg: Msg) -> None:
        async def run() -> dict[str, Any]:
            try:
                component, mode, session = decode_load_request(msg.data)
            except DecodeError as exc:
                BAD_REQUESTS.labels("snapshot_load").inc()
                LOADS.labels("rejected").inc()
                return {"ok": False, "error": str(exc)}
            return await self.load(component, mode, session)

        await _answer(msg, "snapshot_load", run)


@dataclass
class _LedgerFills:
    """One load's read of a session's fills (every candidate has the same mode + session)."""

    through: int = -1  # rows hold every fill with stream_seq <= through
    rows: list[Any] = field(default_factory=list)


def _insert_children(conn: Connection, snap: Snapshot) -> None:
    sid = snap.snapshot_id
    if snap.positions:
        conn.execute(insert(PositionSnapshot), [
            {"snapshot_id": sid, "venue": p.venue, "symbol": p.symbol, "quantity": p.quantity,
             "avg_price": p.avg_price, "realized_pnl": p.realized_pnl, "fees": p.fees,
             "fills": p.fills} for p in snap.positions])  # fmt: skip
    pf = snap.portfolio
    metrics = [
        {"snapshot_id": sid, "scope": "symbol", "symbol": m.symbol,
         "realized_pnl": m.realized_pnl, "trades": m.trades, "wins": m.wins,
         "losses": m.losses, "gross_profit": m.gross_profit, "gross_loss": m.gross_loss,
         "peak": None, "max_drawdown": None} for m in snap.metrics
    ] + [{"snapshot_id": sid, "scope": "portfolio", "symbol": "", "realized_pnl": pf.realized_pnl,
          "trades": pf.trades, "wins": pf.wins, "losses": pf.losses, "gross_profit": None,
          "gross_loss": None, "peak": pf.peak, "max_drawdown": pf.max_drawdown}]  # fmt: skip
    conn.execute(insert(MetricsSnapshot), metrics)
    conn.execute(insert(RiskGuardSnapshot), [_guard_row(snap)])


async def _answer(msg: Msg, verb: str,
                  handle: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Run one request; whatever happens, answer it (and never raise into the NATS client)."""
    try:
        reply = await handle()
    except Exception as exc:  # noqa: BLE001 - a bug must not kill the subscription
        logger.exception("snapshot request failed verb=%s", verb)
        reply = {"ok": False, "error": f"internal: {type(exc).__name__}: {exc}"[:400]}
    if not msg.reply:  # published, not requested: done, nobody to tell
        logger.warning("snapshot request without a reply subject verb=%s ok=%s", verb,
                       reply.get("ok"))
        return
    try:
        await msg.respond(orjson.dumps(reply))
    except Exception as exc:  # noqa: BLE001 - requester gone or connection lost
        logger.warning("could not answer snapshot request verb=%s error=%r", verb, exc)


def ack_floor(bus: Bus, stream: str = "EXEC", durable: str = "state-ledger") -> IngestedThrough:
    """``ingested_through`` for :class:`SnapshotStore`: the stream sequence up to which the
    ledger's durable consumer has acked everything (it acks after the commit), 0 before the
    consumer exists."""
    name = bus.subjects.stream_name(stream)

    async def through() -> int:
        try:
            info = await bus.js.consumer_info(name, durable)
        except nats.js.errors.NotFoundError:
            return 0
        return int(info.ack_floor.stream_seq) if info.ack_floor is not None else 0

    return through


async def register(bus: Bus, store: SnapshotStore) -> None:
    """Serve ``ctl.state.snapshot_save`` and ``ctl.state.snapshot_load`` (core NATS).

    A queue group, so several state replicas answer each request once."""
    subj = bus.subjects
    await bus.nc.subscribe(subj.ctl("state", "snapshot_save"), queue="state",
                           cb=store.on_save)
    await bus.nc.subscribe(subj.ctl("state", "snapshot_load"), queue="state",
                           cb=store.on_load)
    await bus.nc.flush()

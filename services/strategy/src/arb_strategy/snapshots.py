"""Snapshots through the state service (``ctl.state.snapshot_save`` / ``_load``, core NATS).

:class:`SnapshotClient` is the request/reply client. :class:`SnapshotSaver` takes a snapshot
off the book loop's back: :meth:`~SnapshotSaver.trigger` only schedules (at most one save in
flight and one pending; triggers meanwhile coalesce into the pending one, built from the
newest state when its turn comes), and background saves start at least ``min_spacing_s``
apart (a burst of closed trades shares one snapshot; each is covered within that time).
:meth:`~SnapshotSaver.save` (operator request, shutdown) saves at once. A failed save is
logged and counted and simply retried at the next trigger: nothing is lost, the replay from
the last saved ``exec_seq`` covers it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from arb_common.bus import Bus
from arb_common.snapshots import (
    Snapshot,
    SnapshotReason,
    canonical,
    checksum,
    decode_snapshot,
)

from .metrics import SNAPSHOT_FAILURES, SNAPSHOT_SECONDS, SNAPSHOTS_SAVED

logger = logging.getLogger(__name__)


class SnapshotError(Exception):
    """The state service refused or did not answer (retryable)."""


@dataclass
class Loaded:
    snapshot: Snapshot | None
    skipped: list[dict[str, Any]] = field(default_factory=list)


class SnapshotClient:
    def __init__(self, bus: Bus, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout

    async def _request(self, verb: str, body: bytes) -> dict[str, Any]:
        subject = self.bus.subjects.ctl("state", verb)
        try:
            msg = await self.bus.nc.request(subject, body, timeout=self.timeout)
            reply = orjson.loads(msg.data)
        except Exception as exc:  # noqa: BLE001 - timeouts, no responders, bad JSON
            raise SnapshotError(f"{verb}: {exc!r}") from exc
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise SnapshotError(f"{verb} refused: {error}")
        return reply

    async def save(self, snap: Snapshot) -> str:
        reply = await self._request("snapshot_save", wire_bytes(snap))
        return str(reply.get("snapshot_id") or snap.snapshot_id)

    async def load(self, component: str, mode: str, session: str) -> Loaded:
        reply = await self._request("snapshot_load", orjson.dumps(
            {"component": component, "mode": mode, "session": session}))
        skipped = list(reply.get("skipped") or [])
        doc = reply.get("snapshot")
        if doc is None:
            return Loaded(None, skipped)
        try:
            snap = decode_snapshot(orjson.dumps(doc))
        except msgspec.MsgspecError as exc:
            raise SnapshotError(f"snapshot_load: undecodable snapshot: {exc}") from exc
        if checksum(snap) != reply.get("checksum"):
            raise SnapshotError(f"snapshot_load: checksum mismatch for {snap.snapshot_id}")
        return Loaded(snap, skipped)


# When triggers coalesce, the snapshot is labelled with the most telling reason.
_RANK: dict[SnapshotReason, int] = {"periodic": 0, "start": 1, "trade_closed": 2, "manual": 3,
                                    "shutdown": 4}


def _merge(a: SnapshotReason | None, b: SnapshotReason) -> SnapshotReason:
    return b if a is None or _RANK[b] >= _RANK[a] else a


def wire_bytes(snap: Snapshot) -> bytes:
    """``orjson.dumps(to_wire(snap))`` without building the document twice: the canonical
    JSON is the checksummed text itself (same body, half the CPU on the event loop)."""
    canon = canonical(snap)
    digest = hashlib.sha256(canon).hexdigest()
    return b'{"checksum":"' + digest.encode() + b'","snapshot":' + canon + b"}"


class SnapshotSaver:
    def __init__(self, build: Callable[[SnapshotReason], Snapshot],
                 client: SnapshotClient, *, min_spacing_s: float = 0.0) -> None:
        self.build = build
        self.client = client
        self.min_spacing_s = min_spacing_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pending: SnapshotReason | None = None
        self._started_at = -float("inf")  # loop time the last save started
        self.last: Snapshot | None = None  # the last snapshot saved

    def trigger(self, reason: SnapshotReason) -> None:
        """Schedule a save (returns at once; coalesced)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(reason), name=f"snapshot:{reason}")
        else:
            self._pending = _merge(self._pending, reason)

    async def _run(self, reason: SnapshotReason) -> None:
        while True:
            wait = self._started_at + self.min_spacing_s - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
                reason, self._pending = _merge(self._pending, reason), None  # joined meanwhile
            try:
                await self.save(reason)
            except SnapshotError:
                pass  # counted and logged in save(); the next trigger tries again
            if self._pending is None:
                return
            reason, self._pending = self._pending, None

    async def save(self, reason: SnapshotReason) -> Snapshot:
        """Build from the current state and save now (after the save in flight, if any)."""
        async with self._lock:
            self._started_at = asyncio.get_running_loop().time()
            started = time.perf_counter()
            snap = self.build(reason)
            try:
                await self.client.save(snap)
            except SnapshotError as exc:
                SNAPSHOT_FAILURES.inc()
                logger.error("snapshot not saved reason=%s exec_seq=%d error=%s", reason,
                             snap.exec_seq, exc)
                raise
            SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
            SNAPSHOTS_SAVED.labels(reason).inc()
            self.last = snap
            logger.info("snapshot saved snapshot_id=%s reason=%s exec_seq=%d", snap.snapshot_id,
                        reason, snap.exec_seq)
            return snap

    async def idle(self) -> None:
        """Wait for the background saves (in flight and pending) to finish."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

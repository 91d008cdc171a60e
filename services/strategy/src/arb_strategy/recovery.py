"""Start = restore (CONTRACTS.md, "Memory: snapshots, recovery, hot state").

1. The latest valid snapshot from the state service (``ctl.state.snapshot_load``), asked again
   every ``restore_request_timeout_s`` until it answers — meanwhile the strategy decides
   nothing and ``/readyz`` says what it waits for. No snapshot: an empty state, ``exec_seq``
   0 (this session's EXEC events are then replayed from the start of the stream).
2. The last intent per symbol (``Bus.last_message("STRAT", strat.intent.<symbol>)``) of this
   mode and session, if not older than the snapshot: an open → that trade is open, a close →
   flat and cooling down from the intent's time. This runs *before* the replay (CONTRACTS.md
   lists it after): an intent precedes its own orders, so with the trade known the replayed
   order events tell the engine how its open ended (an open that filled nothing goes back to
   flat) exactly as they did live; applied after the replay, such an open would come back as
   an open trade.
3. EXEC from ``exec_seq + 1`` through one ordered consumer (:meth:`arb_common.bus.Bus.follow`)
   that stays the live consumer once it has caught up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from arb_common.messages import Intent
from arb_common.snapshots import Snapshot

from .memory import COMPONENT
from .snapshots import SnapshotError

if TYPE_CHECKING:
    from .app import StrategyService

logger = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.5  # between load attempts (an absent state service answers at once)


class _Laps:
    """Seconds per restore phase, into ``out`` (shown on /info, used by the benchmark)."""

    def __init__(self, out: dict[str, float]) -> None:
        self.out = out
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.out[phase] = round(now - self.last, 6)
        self.last = now


class Recovery:
    def __init__(self, svc: StrategyService) -> None:
        self.svc = svc

    def _gone(self) -> bool:
        return self.svc.stopping or self.svc.bus.closed.is_set()

    async def run(self) -> bool:
        """Restore, reconcile and replay; True once caught up (False: stopped meanwhile)."""
        svc = self.svc
        lap = _Laps(svc.restore_timings)
        snap = await self.load_snapshot()
        if self._gone():
            return False
        lap("load")
        if snap is not None:
            svc.memory.restore(snap)
            svc.restored_from = snap.snapshot_id
        lap("restore")
        logger.info("state restored snapshot_id=%s exec_seq=%d open_trades=%d",
                    snap.snapshot_id if snap else None, svc.memory.exec_seq,
                    len(svc.engine.open_trades()))
        await self.check_exec_stream()
        await self.reconcile_intents(snap.taken_ts if snap else None)
        lap("intents")
        svc.restore_detail = f"replaying EXEC from seq {svc.memory.exec_seq + 1}"
        # The whole stream (it holds exec.> only): a wildcard filter would slow the replay.
        svc.follower = svc.bus.follow(
            stream="EXEC", filter_subject=None, start_seq=svc.memory.exec_seq + 1,
            handler=svc.on_exec, name="strategy-exec")
        await svc.follower.caught_up.wait()
        lap("replay")
        return not self._gone()

    async def load_snapshot(self) -> Snapshot | None:
        svc, s = self.svc, self.svc.settings
        attempt = 0
        while not self._gone():
            attempt += 1
            svc.restore_detail = f"loading the snapshot from the state service (try {attempt})"
            try:
                loaded = await svc.saver.client.load(COMPONENT, s.mode.value, s.session)
            except SnapshotError as exc:
                svc.restore_detail = f"waiting for the state service: {exc}"[:300]
                logger.warning("snapshot load failed attempt=%d error=%s; retrying", attempt,
                               exc)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            for skipped in loaded.skipped:
                logger.error("snapshot skipped by the state service snapshot_id=%s reason=%s",
                             skipped.get("snapshot_id"), skipped.get("reason"))
            return loaded.snapshot
        return None

    async def check_exec_stream(self) -> None:
        svc = self.svc
        info = await svc.bus.js.stream_info(svc.bus.subjects.stream_name("EXEC"))
        first, last = info.state.first_seq, info.state.last_seq
        if svc.memory.exec_seq > last:
            logger.error("EXEC stream is behind the snapshot (re-created?) exec_seq=%d "
                         "last_seq=%d; applying the new stream from its start",
                         svc.memory.exec_seq, last)
            svc.memory.exec_seq = 0
        elif info.state.messages and svc.memory.exec_seq + 1 < first:
            logger.error("EXEC events after the snapshot expired from the stream exec_seq=%d "
                         "first_seq=%d; state misses them until reconciliation",
                         svc.memory.exec_seq, first)

    async def reconcile_intents(self, since_ts: int | None) -> None:
        svc, s = self.svc, self.svc.settings
        subj = svc.bus.subjects
        lasts = await asyncio.gather(
            *(svc.bus.last_message("STRAT", subj.intent(sym)) for sym in svc.engine.symbols))
        for last in lasts:
            if last is None:
                continue
            env, intent = last
            if (not isinstance(intent, Intent) or env.session != s.session
                    or env.mode != s.mode.value or (since_ts is not None and env.ts < since_ts)):
                continue
            if svc.engine.reconcile_intent(intent, env.ts):
                svc.hot_changed(intent.symbol)
                logger.info("engine reconciled with the last intent intent_id=%s action=%s",
                            intent.intent_id, intent.action)

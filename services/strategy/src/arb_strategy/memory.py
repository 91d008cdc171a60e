"""Everything the strategy must remember across a crash, and how EXEC events change it.

One object owns the state that snapshots carry: the RiskGuard, the engine's per-symbol trade
state, the PnL tracker's open trades, trade statistics, average-cost positions, the ids of
the fills applied recently, and ``exec_seq`` — the last EXEC stream sequence applied.
:meth:`StrategyMemory.apply` is the only way EXEC events change it (live and replay alike),
idempotent on the stream sequence and on the fill id; :meth:`snapshot` and :meth:`restore`
round-trip it exactly. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec

from arb_common.bus import SeenIds
from arb_common.messages import BalanceSnapshot, Envelope, FillEvent, OrderEvent
from arb_common.snapshots import Snapshot, SnapshotReason, snapshot_id

from .engine import Engine
from .pnl import PnlTracker, TradeResult
from .positions import PositionBook
from .risk_guard import RiskGuard
from .stats import TradeStats

logger = logging.getLogger(__name__)

COMPONENT = "strategy"


@dataclass(frozen=True)
class Applied:
    """What one EXEC event changed."""

    symbol: str
    fill: bool  # a fill (guard, positions, pnl) rather than an order event (engine)
    trade: TradeResult | None = None  # the round trip this fill completed


class StrategyMemory:
    SEEN_IN_SNAPSHOT = 2_000  # fill ids carried by a snapshot (the newest)

    def __init__(self, *, mode: str, session: str, engine: Engine, guard: RiskGuard,
                 pnl: PnlTracker) -> None:
        self.mode = mode
        self.session = session
        self.engine = engine
        self.guard = guard
        self.pnl = pnl
        self.stats = TradeStats()
        self.positions = PositionBook()
        self.seen = SeenIds()
        self._recent: deque[str] = deque(maxlen=self.SEEN_IN_SNAPSHOT)
        self.exec_seq = 0

    # ------------------------------------------------------------ events
    def apply(self, seq: int, env: Envelope, payload: Any) -> Applied | None:
        """Apply the EXEC event at stream sequence ``seq`` (None: nothing changed)."""
        if seq <= self.exec_seq:
            return None  # applied before (replay overlap)
        self.exec_seq = seq
        if env.mode != self.mode or env.session != self.session:
            return None  # another mode's or session's event
        if isinstance(payload, OrderEvent):
            self.engine.on_order(payload, at_ns=env.ts)
            return Applied(payload.symbol, fill=False)
        if isinstance(payload, FillEvent):
            return self._fill(env, payload)
        if isinstance(payload, BalanceSnapshot):
            return None  # a paper account's balances: the ledger's, not the strategy's
        raise TypeError(f"not an EXEC event: {env.type}")

    def _fill(self, env: Envelope, fill: FillEvent) -> Applied | None:
        if fill.quantity <= 0:
            raise ValueError(f"fill quantity must be positive, got {fill.quantity}")
        key = f"fill:{fill.venue}:{fill.venue_trade_id}"  # the ledger's unique key
        if not self.seen.add(key):
            return None
        self._recent.append(key)
        self.guard.record_fill(fill.symbol, fill.venue, fill.side, fill.quantity, fill.price)
        self.positions.apply(fill)
        result = self.pnl.on_fill(fill)
        if result is not None:
            self.guard.record_trade_pnl(result.symbol, result.pnl, at_ns=env.ts)
            self.stats.record(result.symbol, result.pnl)
        return Applied(fill.symbol, fill=True, trade=result)

    # ------------------------------------------------------------ snapshots
    def snapshot(self, reason: SnapshotReason, now_ns: int) -> Snapshot:
        return Snapshot(
            snapshot_id=snapshot_id(COMPONENT, self.mode, self.session, self.exec_seq, now_ns),
            component=COMPONENT,
            mode=self.mode,
            session=self.session,
            reason=reason,
            taken_ts=now_ns,
            exec_seq=self.exec_seq,
            positions=self.positions.snaps(),
            metrics=self.stats.metrics(),
            portfolio=self.stats.portfolio(),
            guard=self.guard.get_state(),
            engine=self.engine.get_state(),
            pnl=self.pnl.get_state(),
            seen_fills=list(self._recent),
        )

    def state(self) -> dict[str, Any]:
        """The remembered state alone (a snapshot without its id, reason and time): two
        memories that went through the same events compare equal."""
        doc = msgspec.to_builtins(self.snapshot("manual", 0), order="sorted")
        for key in ("snapshot_id", "reason", "taken_ts"):
            doc.pop(key)
        return doc  # type: ignore[no-any-return]

    def restore(self, snap: Snapshot) -> None:
        if (snap.component, snap.mode, snap.session) != (COMPONENT, self.mode, self.session):
            raise ValueError(f"snapshot {snap.snapshot_id} is not this strategy's "
                             f"({COMPONENT}, {self.mode}, {self.session})")
        self.guard.restore_state(snap.guard)
        self.engine.restore_state(snap.engine)
        self.pnl.restore_state(snap.pnl)
        self.stats.restore(snap.metrics, snap.portfolio)
        self.positions.restore(snap.positions)
        self.seen = SeenIds()
        self._recent.clear()
        for key in snap.seen_fills:
            self.seen.add(key)
            self._recent.append(key)
        self.exec_seq = snap.exec_seq

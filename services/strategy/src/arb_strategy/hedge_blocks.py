"""New entries blocked by exposure the executor could not hedge (the RISK stream).

When the executor cannot even out an intent's legs (``arb_executor.hedge``), it publishes
``RiskEvent(blocked=True)`` with kind ``unhedged_exposure`` or ``unknown_outcome`` on
``risk.event.<symbol>``. The strategy follows RISK from its start (a small stream), so a
restart rebuilds exactly the blocks of its mode and session, and refuses new opens on a
blocked symbol (``RiskGuard.allow_open``; exits still run). An operator clears a block with
``ctl.strategy.unblock {"symbol": "BTC-USDT"}`` (``arbctl unblock BTC-USDT``), which is itself
a ``RiskEvent(kind="block_cleared")`` on the bus: the clear survives restarts too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from arb_common.follow import Follower
from arb_common.messages import Envelope, RiskEvent

if TYPE_CHECKING:
    from .app import StrategyService

logger = logging.getLogger(__name__)

EXECUTOR_KINDS = frozenset({"unhedged_exposure", "unknown_outcome"})
CLEARED = "block_cleared"

BLOCKED = Gauge("arb_strategy_symbol_blocked",
                "1 while new entries on the symbol are blocked by unhedged exposure", ["symbol"])


class HedgeBlocks:
    def __init__(self, svc: StrategyService) -> None:
        self.svc = svc
        self.follower: Follower | None = None

    def start(self) -> None:
        self.follower = self.svc.bus.follow(stream="RISK", filter_subject=None, start_seq=1,
                                            handler=self.on_risk, name="risk-blocks")

    @property
    def blocks(self) -> dict[str, str]:
        return self.svc.guard.blocks

    async def on_risk(self, _seq: int, env: Envelope, ev: Any) -> None:
        svc = self.svc
        if not isinstance(ev, RiskEvent) or env.mode != svc.settings.mode.value \
                or env.session != svc.settings.session:
            return
        if ev.kind == CLEARED:
            if self.blocks.pop(ev.symbol, None) is not None:
                logger.warning("entries unblocked symbol=%s detail=%s", ev.symbol, ev.detail)
            BLOCKED.labels(ev.symbol).set(0)
        elif env.source == "executor" and ev.blocked and ev.kind in EXECUTOR_KINDS:
            if ev.symbol not in self.blocks:
                logger.error("entries blocked symbol=%s kind=%s detail=%s", ev.symbol, ev.kind,
                             ev.detail)
            self.blocks[ev.symbol] = f"{ev.kind}: {ev.detail}"[:300]
            BLOCKED.labels(ev.symbol).set(1)

    async def unblock(self, symbol: str, actor: str) -> None:
        """Publish the clear durably (the follower applies it, here and after restarts)."""
        bus = self.svc.bus
        ts = self.svc.clock.now_ns()
        event = RiskEvent(symbol=symbol, kind=CLEARED, blocked=False,
                          detail=f"cleared by {actor}")
        await bus.publish(bus.subjects.risk(symbol), event, f"risk:{symbol}:{CLEARED}:{ts}",
                          timeout=5.0)
        self.blocks.pop(symbol, None)  # at once; the follower's copy is idempotent
        BLOCKED.labels(symbol).set(0)

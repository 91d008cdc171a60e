"""Operator control (core NATS request/reply on ``ctl.strategy.<verb>``, JSON bodies).

- ``trading`` ``{"enabled": false}`` → ``{"ok": true, "enabled": false, "persisted": true}``:
  stops new entries at once (exits still run) and records ``ctl.event.trading`` durably.
- ``snapshot`` ``{}`` (``arbctl snapshot``) → ``{"ok": true, "snapshot_id", "exec_seq"}``.
- ``state`` ``{}`` → ``{"ok": true, "live": true, "state": <Snapshot doc, not saved>}``.
- ``unblock`` ``{"symbol": "BTC-USDT"}`` → ``{"ok": true, "symbol", "was_blocked", "blocks"}``:
  clears a block the executor raised for unhedged exposure (:mod:`.hedge_blocks`);
  ``{}`` lists the blocks.

Errors answer ``{"ok": false, "error": "..."}``. Every verb but ``state`` needs the control token
outside the dev profile (``Authorization: Bearer <ARB_CONTROL_TOKEN>`` request header).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.msg import Msg

from arb_common.messages import TradingControl
from arb_common.runtime import token_ok

from .metrics import BAD_MESSAGES, TRADING_ENABLED
from .snapshots import SnapshotError

if TYPE_CHECKING:
    from .app import StrategyService

logger = logging.getLogger(__name__)


def _authorization(msg: Msg) -> str | None:
    headers = msg.headers or {}
    return headers.get("Authorization") or headers.get("authorization")


def _request(msg: Msg) -> dict[str, Any]:
    req = orjson.loads(msg.data) if msg.data else {}
    if not isinstance(req, dict):
        raise ValueError("request must be a JSON object")
    return req


async def _reply(msg: Msg, body: dict[str, Any]) -> None:
    await msg.respond(orjson.dumps(body))


class Control:
    def __init__(self, svc: StrategyService) -> None:
        self.svc = svc

    async def subscribe(self) -> None:
        bus = self.svc.bus
        for verb, cb in (("trading", self.on_trading), ("snapshot", self.on_snapshot),
                         ("state", self.on_state), ("unblock", self.on_unblock)):
            guarded = cb if verb == "state" else self._guarded(verb, cb)
            await bus.nc.subscribe(bus.subjects.ctl("strategy", verb), cb=guarded)

    def _guarded(self, verb: str, cb: Callable[[Msg], Awaitable[None]],
                 ) -> Callable[[Msg], Awaitable[None]]:
        """Actions need the control token outside dev (``Authorization: Bearer ...`` header,
        as ``arbctl`` sends it from ``ARB_CONTROL_TOKEN``); reading state does not."""
        async def check(msg: Msg) -> None:
            if not token_ok(self.svc.settings, _authorization(msg)):
                BAD_MESSAGES.labels("control").inc()
                logger.warning("control request refused: bad or missing token verb=%s", verb)
                await _reply(msg, {"ok": False, "error": "control token required"})
                return
            await cb(msg)

        return check

    async def on_trading(self, msg: Msg) -> None:
        try:
            req = _request(msg)
            enabled = req.get("enabled")
            if enabled is not None and not isinstance(enabled, bool):
                raise ValueError("'enabled' must be true or false")
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            BAD_MESSAGES.labels("control").inc()
            await _reply(msg, {"ok": False, "error": str(exc)})
            return
        reply: dict[str, Any] = {"ok": True}
        if enabled is not None:
            reply["persisted"] = await self.set_trading(
                enabled, actor=str(req.get("actor", "operator")), reason=str(req.get("reason", "")))
        reply["enabled"] = self.svc.engine.trading_enabled
        await _reply(msg, reply)

    async def set_trading(self, enabled: bool, *, actor: str = "operator",
                          reason: str = "") -> bool:
        """Apply at once (exits keep running), then record it durably on ``ctl.event.trading``."""
        svc = self.svc
        svc.engine.trading_enabled = enabled
        TRADING_ENABLED.set(1 if enabled else 0)
        logger.warning("trading %s actor=%s reason=%s", "enabled" if enabled else "disabled",
                       actor, reason)
        ts = svc.clock.now_ns()
        try:
            await svc.bus.publish(svc.bus.subjects.ctl_event("trading"),
                                  TradingControl(enabled=enabled, actor=actor, reason=reason),
                                  f"trading:{ts}", timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - the switch works; persistence is reported
            logger.error("trading control not persisted error=%r", exc)
            return False
        return True

    async def on_snapshot(self, msg: Msg) -> None:
        if not self.svc.live:
            await _reply(msg, {"ok": False,
                               "error": f"not restored yet: {self.svc.restore_detail}"})
            return
        try:
            snap = await self.svc.saver.save("manual")
        except SnapshotError as exc:
            await _reply(msg, {"ok": False, "error": str(exc)})
            return
        await _reply(msg, {"ok": True, "snapshot_id": snap.snapshot_id,
                           "exec_seq": snap.exec_seq})

    async def on_state(self, msg: Msg) -> None:
        await _reply(msg, {"ok": True, "live": self.svc.live, "state": self.svc.state_doc()})

    async def on_unblock(self, msg: Msg) -> None:
        blocks = self.svc.hedge_blocks
        try:
            req = _request(msg)
            symbol = req.get("symbol")
            if symbol is not None and (not isinstance(symbol, str) or not symbol):
                raise ValueError("'symbol' must be a symbol like BTC-USDT")
        except ValueError as exc:
            BAD_MESSAGES.labels("control").inc()
            await _reply(msg, {"ok": False, "error": str(exc)})
            return
        reply: dict[str, Any] = {"ok": True}
        if symbol is not None:
            reply["symbol"] = symbol
            reply["was_blocked"] = symbol in blocks.blocks
            try:
                await blocks.unblock(symbol, str(req.get("actor", "operator")))
            except Exception as exc:  # noqa: BLE001 - told to the operator
                await _reply(msg, {"ok": False, "error": f"not persisted: {exc!r}"})
                return
        reply["blocks"] = dict(blocks.blocks)
        await _reply(msg, reply)

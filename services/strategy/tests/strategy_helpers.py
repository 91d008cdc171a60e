"""Builders and stand-ins shared by the strategy tests."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from arb_common.bus import Bus
from arb_common.messages import Book, FillEvent, OrderEvent, VenueReady
from arb_common.snapshots import checksum, decode_snapshot
from arb_common.testing import wait_until
from arb_strategy.app import StrategyService
from arb_strategy.config import StrategySettings

FEES = {"alpha": Decimal("0.001"), "beta": Decimal("0.001")}


class SnapshotResponder:
    """``ctl.state.snapshot_save`` / ``_load`` over real NATS, documents kept in memory."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.saved: list[dict[str, Any]] = []  # wire documents, in save order
        self.fail_saves = False
        self.loads = 0
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        subj = self.bus.subjects
        self._subs = [
            await self.bus.nc.subscribe(subj.ctl("state", "snapshot_save"), cb=self._save),
            await self.bus.nc.subscribe(subj.ctl("state", "snapshot_load"), cb=self._load),
        ]
        await self.bus.nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []

    async def _save(self, msg: Msg) -> None:
        if self.fail_saves:
            await msg.respond(orjson.dumps({"ok": False, "error": "ledger: down (test)"}))
            return
        req = orjson.loads(msg.data)
        snap = decode_snapshot(orjson.dumps(req["snapshot"]))
        assert checksum(snap) == req["checksum"]
        self.saved.append(req["snapshot"])
        await msg.respond(orjson.dumps({"ok": True, "snapshot_id": snap.snapshot_id,
                                        "duplicate": False}))

    async def _load(self, msg: Msg) -> None:
        self.loads += 1
        req = orjson.loads(msg.data)
        mine = [d for d in self.saved if (d["component"], d["mode"], d["session"]) ==
                (req["component"], req["mode"], req["session"])]
        doc = mine[-1] if mine else None
        digest = checksum(decode_snapshot(orjson.dumps(doc))) if doc else None
        await msg.respond(orjson.dumps({"ok": True, "snapshot": doc, "checksum": digest,
                                        "skipped": []}))

    def reasons(self) -> list[str]:
        return [d["reason"] for d in self.saved]


def settings_for(nats_url: str, prefix: str, **over: Any) -> StrategySettings:
    base: dict[str, Any] = {
        "nats_url": nats_url, "bus_prefix": prefix, "session": "itest",
        "symbols": "BTC-USDT,ETH-USDT", "cooldown_s": 0,
        "max_exposure_default": Decimal("100000"), "restore_request_timeout_s": 1.0,
    }
    return StrategySettings(**{**base, **over})


async def open_gate(bus: Bus) -> None:
    for venue in FEES:  # the reconciler's gate is open for both venues
        await bus.publish(bus.subjects.ready(venue), VenueReady(venue=venue, ready=True,
                                                                run_id="r"), f"ready:{venue}:r:1")


async def new_strategy(nats_url: str, prefix: str, *, live: bool = True,
                       redis: bool = False, **over: Any) -> StrategyService:
    """A started strategy on its own connection (waits until it is live, by default)."""
    settings = settings_for(nats_url, prefix, **over)
    bus = Bus(nats_url, service="strategy", session=settings.session, mode=settings.mode.value,
              prefix=prefix)
    await bus.connect()
    await bus.provision()
    svc = StrategyService(settings, bus, FEES, redis=redis)
    await svc.start()
    if live:
        await asyncio.wait_for(svc.live_event.wait(), 15)
    return svc


async def kill(svc: StrategyService) -> None:
    """What ``kill -9`` leaves behind: no final snapshot, no flush, nothing handed over."""
    svc.stopping = True
    await svc._cancel_tasks()
    nc = svc.bus.nc
    for task in svc.bus._tasks:
        task.cancel()
    await asyncio.gather(*svc.bus._tasks, return_exceptions=True)
    await nc.close()
    if svc.hot is not None:
        await svc.hot.close()


async def graceful_stop(svc: StrategyService) -> None:
    await svc.stop()
    await svc.bus.close()


def lv(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in pairs]


def wide_books(seq: int, symbol: str = "BTC-USDT") -> tuple[Book, Book]:
    now = time.time_ns()
    a = Book(venue="alpha", symbol=symbol, seq=seq, bids=lv(("60000", "1")),
             asks=lv(("60010", "0.005"), ("60012", "1")), recv_ts=now - 1000)
    b = Book(venue="beta", symbol=symbol, seq=seq + 1, bids=lv(("60200", "1")),
             asks=lv(("60210", "1")), recv_ts=now)
    return a, b


def reverted_books(seq: int, symbol: str = "BTC-USDT") -> tuple[Book, Book]:
    """The gap reverted (alpha now a little above beta): the exit costs ~-12 bps (closes)."""
    now = time.time_ns()
    a = Book(venue="alpha", symbol=symbol, seq=seq, bids=lv(("60150", "1")),
             asks=lv(("60151", "1")), recv_ts=now - 1000)
    b = Book(venue="beta", symbol=symbol, seq=seq + 1, bids=lv(("60100", "1")),
             asks=lv(("60101", "1")), recv_ts=now)
    return a, b


async def publish_books(bus: Bus, *books: Book) -> None:
    for bk in books:
        await bus.publish_fast(bus.subjects.book(bk.venue, bk.symbol), bk,
                               f"book:{bk.venue}:{bk.symbol}:{bk.seq}")
    await bus.nc.flush()


def fill(n: int, venue: str, side: str, price: str, trade_id: str, action: str, *,
         qty: str = "0.01", symbol: str = "BTC-USDT", fee: str = "0.5") -> FillEvent:
    return FillEvent(venue=venue, symbol=symbol, client_order_id=f"c{trade_id}{n}",
                     venue_trade_id=f"{trade_id}-{n}", side=side,  # type: ignore[arg-type]
                     quantity=Decimal(qty), price=Decimal(price), fee=Decimal(fee),
                     fee_asset="USDT", ts=n, intent_id=f"{trade_id}:{action}", trade_id=trade_id)


def order(venue: str, side: str, trade_id: str, action: str, filled: str, *,
          qty: str = "0.01", symbol: str = "BTC-USDT", status: str = "FILLED") -> OrderEvent:
    return OrderEvent(venue=venue, symbol=symbol, client_order_id=f"o{trade_id}{side}{action}",
                      side=side, quantity=Decimal(qty),  # type: ignore[arg-type]
                      filled_quantity=Decimal(filled), status=status,  # type: ignore[arg-type]
                      intent_id=f"{trade_id}:{action}", trade_id=trade_id)


async def publish_exec(bus: Bus, *events: FillEvent | OrderEvent) -> None:
    for ev in events:
        if isinstance(ev, FillEvent):
            await bus.publish(bus.subjects.fill(ev.venue, ev.symbol), ev,
                              f"fill:{ev.venue}:{ev.venue_trade_id}")
        else:
            await bus.publish(bus.subjects.order(ev.venue, ev.symbol), ev,
                              f"order:{ev.client_order_id}:{ev.status}:{ev.filled_quantity}")


def round_trip(trade_id: str, *, symbol: str = "BTC-USDT", base: int = 0,
               prices: tuple[str, str, str, str] = ("60000", "60200", "60100", "60090"),
               ) -> list[FillEvent]:
    """Open (buy alpha, sell beta) and close (buy beta, sell alpha) fills of one trade."""
    legs = [("alpha", "buy", "open"), ("beta", "sell", "open"), ("beta", "buy", "close"),
            ("alpha", "sell", "close")]
    return [fill(base + i, venue, side, price, trade_id, action, symbol=symbol)
            for i, ((venue, side, action), price) in enumerate(zip(legs, prices, strict=True))]


async def wait_exec_seq(svc: StrategyService, bus: Bus) -> None:
    """Until the strategy applied everything in the EXEC stream."""
    info = await bus.js.stream_info(bus.subjects.stream_name("EXEC"))
    last = info.state.last_seq
    await wait_until(lambda: svc.memory.exec_seq >= last, what=f"exec_seq {last}")

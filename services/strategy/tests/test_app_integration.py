"""strategy over real NATS: crafted books in, Intents on the STRAT stream with contract msg ids;
malformed messages counted; trading control round trip; fills -> realized PnL; risk events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest
from prometheus_client import REGISTRY
from strategy_helpers import (
    FEES,
    SnapshotResponder,
    new_strategy,
    open_gate,
    publish_books,
    settings_for,
    wide_books,
)

from arb_common.bus import Bus
from arb_common.messages import FillEvent, Intent, RiskEvent, TradingControl, VenueStatus, decode
from arb_common.testing import wait_until as wait_for
from arb_strategy.app import StrategyService
from arb_strategy.engine import trade_id_for
from arb_strategy.spread import best_quote

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def buses(md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str
                ) -> AsyncIterator[tuple[StrategyService, Bus]]:
    """A live strategy (restored through the stand-in state service) and the other side."""
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix)
    yield svc, md_bus
    await svc.bus.close()


async def last_intent(bus: Bus, symbol: str) -> tuple[str, Intent] | None:
    try:
        raw = await bus.js.get_last_msg(bus.subjects.stream_name("STRAT"),
                                        bus.subjects.intent(symbol))
    except Exception:  # noqa: BLE001 - not there yet
        return None
    assert raw.data is not None and raw.headers is not None
    return raw.headers["Nats-Msg-Id"], decode(raw.data)[1]


async def test_crafted_books_produce_the_open_intent_with_the_contract_msg_id(
        buses: tuple[StrategyService, Bus], nats_url: str, bus_prefix: str) -> None:
    svc, md = buses
    a, b = wide_books(100)
    await publish_books(md, a, b)
    got: list[tuple[str, Intent] | None] = [None]

    async def poll() -> None:
        while got[0] is None:
            got[0] = await last_intent(md, "BTC-USDT")
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 10)
    assert got[0] is not None
    msg_id, intent = got[0]
    q = best_quote({"alpha": a, "beta": b}, Decimal("0.01"), FEES)
    assert q is not None
    trade_id = trade_id_for("itest", "BTC-USDT", q)
    assert msg_id == f"intent:{trade_id}:open"
    assert intent.intent_id == f"{trade_id}:open" and intent.action == "open"
    assert (intent.buy_venue, intent.sell_venue, intent.quantity) == ("alpha", "beta",
                                                                     Decimal("0.01"))
    # walked past the 0.005 top level: (0.005*60010 + 0.005*60012) / 0.01
    assert intent.buy_price == Decimal("60011")
    assert intent.origin_ts == b.recv_ts
    assert svc.ready()[0]
    assert metric("arb_strategy_intents_total", symbol="BTC-USDT", action="open") >= 1


async def test_malformed_bus_messages_are_counted_and_do_not_stop_the_strategy(
        buses: tuple[StrategyService, Bus], nats_url: str, bus_prefix: str) -> None:
    svc, md = buses
    dlq = metric("arb_bus_dlq_total", stream="core", reason="decode")
    wrong = metric("arb_strategy_bad_messages_total", kind="not_a_book")
    subject = md.subjects.book("alpha", "ETH-USDT")
    await md.nc.publish(subject, b"{not json")
    await md.nc.publish(subject, orjson.dumps({"type": "md.book", "v": 1, "id": "x", "ts": 1,
                                               "source": "?", "session": "?", "mode": "paper",
                                               "payload": {"venue": "alpha"}}))
    await md.publish_fast(subject, VenueStatus(venue="alpha", connected=True), "oops")
    await md.nc.flush()
    await wait_for(lambda: metric("arb_bus_dlq_total", stream="core", reason="decode")
                   == dlq + 2, what="2 undecodable messages counted")
    await wait_for(lambda: metric("arb_strategy_bad_messages_total", kind="not_a_book")
                   == wrong + 1, what="wrong payload type counted")
    await publish_books(md, *wide_books(500, "ETH-USDT"))
    await wait_for(lambda: "ETH-USDT" in svc.engine.open_trades(), what="open after bad input")


async def test_a_book_with_a_bad_level_is_dropped_and_counted(
        buses: tuple[StrategyService, Bus]) -> None:
    """Levels are decoded when used (LazyBook): a bad price is found then, counted, and the
    book forgotten; the venue's next good book trades as usual."""
    svc, md = buses
    bad = metric("arb_strategy_bad_messages_total", kind="bad_book")
    a, b = wide_books(700, "ETH-USDT")
    data = md.envelope(b, "bad-level").replace(b'"60210"', b'"6O210"')
    await publish_books(md, a)
    await md.nc.publish(md.subjects.book("beta", "ETH-USDT"), data)
    await md.nc.flush()
    await wait_for(lambda: metric("arb_strategy_bad_messages_total", kind="bad_book")
                   == bad + 1, what="bad level counted")
    assert "beta" not in svc.engine.symbols["ETH-USDT"].books
    assert "ETH-USDT" not in svc.engine.open_trades()
    await publish_books(md, *wide_books(710, "ETH-USDT"))
    await wait_for(lambda: "ETH-USDT" in svc.engine.open_trades(), what="open after bad book")


async def test_trading_control_replies_persists_and_is_restored(
        buses: tuple[StrategyService, Bus], nats_url: str, bus_prefix: str) -> None:
    svc, md = buses
    subject = md.subjects.ctl("strategy", "trading")
    reply = await md.nc.request(subject, b'{"enabled": false}', timeout=5)
    assert orjson.loads(reply.data) == {"ok": True, "enabled": False, "persisted": True}
    bad = await md.nc.request(subject, b'{"enabled": "maybe"}', timeout=5)
    assert orjson.loads(bad.data)["ok"] is False
    assert metric("arb_strategy_trading_enabled") == 0
    last = await md.last_message("CTL", md.subjects.ctl_event("trading"))
    assert last is not None and last[1] == TradingControl(enabled=False, actor="operator")
    await publish_books(md, *wide_books(700))
    await asyncio.sleep(0.3)
    assert svc.engine.open_trades() == {}  # disabled: no new entries
    # A restart reads the last decision.
    fresh = StrategyService(settings_for(nats_url, bus_prefix), md, FEES)
    await fresh._restore_trading()
    assert fresh.engine.trading_enabled is False
    reply = await md.nc.request(subject, b'{"enabled": true}', timeout=5)
    assert orjson.loads(reply.data)["enabled"] is True
    await publish_books(md, *wide_books(800))
    await wait_for(lambda: "BTC-USDT" in svc.engine.open_trades(), what="open once enabled")


async def publish_round_trip(bus: Bus, trade_id: str, symbol: str, prices: tuple[str, ...],
                             fee: str = "0.5") -> None:
    """The four fills of one round trip of 0.01: buy alpha / sell beta at ``prices[0:2]``
    (open), buy beta / sell alpha at ``prices[2:4]`` (close), each published twice."""
    legs = [("alpha", "buy", "open"), ("beta", "sell", "open"),
            ("beta", "buy", "close"), ("alpha", "sell", "close")]
    for i, ((venue, side, action), price) in enumerate(zip(legs, prices, strict=True)):
        f = FillEvent(venue=venue, symbol=symbol, client_order_id=f"{trade_id}c{i}",
                      venue_trade_id=f"{trade_id}-{i}", side=side, quantity=Decimal("0.01"),  # type: ignore[arg-type]
                      price=Decimal(price), fee=Decimal(fee), fee_asset="USDT", ts=i,
                      intent_id=f"{trade_id}:{action}", trade_id=trade_id)
        for _ in range(2):  # a re-publish is dropped by JetStream / SeenIds
            await bus.publish(bus.subjects.fill(venue, symbol), f, f"fill:{venue}:{trade_id}:{i}")


async def test_fills_complete_a_trade_and_feed_the_risk_guard_once(
        buses: tuple[StrategyService, Bus], nats_url: str, bus_prefix: str) -> None:
    svc, md = buses
    await publish_round_trip(md, "T9", "BTC-USDT", ("60000", "60200", "60100", "60090"))
    # proceeds 602 + 600.9 - costs 600 + 601 - fees 2 = -0.1
    await wait_for(lambda: svc.guard.realized.get("BTC-USDT") == Decimal("-0.1"),
                   what="realized pnl")
    await asyncio.sleep(0.3)
    assert svc.guard.realized["BTC-USDT"] == Decimal("-0.1")
    assert svc.guard.exposure("BTC-USDT") == 0
    await asyncio.sleep(1.5)  # let the pull consumer run a few empty fetches
    started = time.monotonic()
    await svc.stop()
    await svc.bus.close()
    assert time.monotonic() - started < 5  # graceful stop does not sit in a drain timeout


async def test_a_risk_block_publishes_a_risk_event(
        buses: tuple[StrategyService, Bus], nats_url: str, bus_prefix: str) -> None:
    svc, md = buses
    svc.guard.record_trade_pnl("BTC-USDT", Decimal("-1000"))
    await publish_books(md, *wide_books(900))
    got: list[RiskEvent] = []

    async def poll() -> None:
        while not got:
            last = await md.last_message("RISK", md.subjects.risk("BTC-USDT"))
            if last is not None:
                got.append(last[1])
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 10)
    assert got[0].kind == "daily_loss_limit" and got[0].blocked
    assert metric("arb_strategy_risk_blocks_total", symbol="BTC-USDT",
                  kind="daily_loss_limit") >= 1
    assert svc.engine.open_trades() == {}


async def test_won_round_trips_and_the_risk_limits_are_metrics(
        md_bus: Bus, snapshots: SnapshotResponder, nats_url: str, bus_prefix: str) -> None:
    await open_gate(md_bus)
    svc = await new_strategy(nats_url, bus_prefix, daily_loss_limit=Decimal("250"),
                             max_exposure={"ETH-USDT": Decimal("2000")})
    try:
        assert metric("arb_strategy_daily_loss_limit") == 250
        assert metric("arb_strategy_exposure_limit", symbol="ETH-USDT") == 2000
        assert metric("arb_strategy_exposure_limit", symbol="BTC-USDT") == 100000  # default
        # Before any trade both counters exist: a winrate of 0/0, not a missing series.
        for name in ("arb_strategy_trades_completed_total", "arb_strategy_trades_won_total"):
            assert REGISTRY.get_sample_value(name, {"symbol": "ETH-USDT"}) is not None
        closed = metric("arb_strategy_trades_completed_total", symbol="ETH-USDT")
        won = metric("arb_strategy_trades_won_total", symbol="ETH-USDT")
        # +0.49 - fees 0.04 (won), then -0.19 - 0.04 (lost)
        await publish_round_trip(md_bus, "W1", "ETH-USDT", ("3000", "3030", "3001", "3020"),
                                 fee="0.01")
        await publish_round_trip(md_bus, "L1", "ETH-USDT", ("3000", "3001", "3010", "2990"),
                                 fee="0.01")
        await wait_for(lambda: metric("arb_strategy_trades_completed_total", symbol="ETH-USDT")
                       == closed + 2, what="two round trips closed")
        assert svc.guard.realized["ETH-USDT"] == Decimal("0.45") + Decimal("-0.23")
        assert metric("arb_strategy_trades_won_total", symbol="ETH-USDT") == won + 1
    finally:
        await svc.bus.close()

"""StrategyMemory: EXEC events by stream sequence → guard, positions, PnL, statistics; a
snapshot taken anywhere + the replay of the rest equals the uninterrupted run, exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from arb_common.clock import ManualClock
from arb_common.messages import Envelope, FillEvent, OrderEvent, decode, encode
from arb_common.positions import replay
from arb_common.snapshots import (
    checksum,
    decode_snapshot,
    guard_inconsistency,
    position_mismatch,
    to_wire,
)
from arb_strategy.engine import Engine, EngineConfig
from arb_strategy.memory import StrategyMemory
from arb_strategy.pnl import PnlTracker
from arb_strategy.risk_guard import DAY_NS, RiskGuard

T0 = 1_700_000_000_000_000_000
FEES = {"alpha": Decimal("0.001"), "beta": Decimal("0.001")}
SYMBOLS = ("BTC-USDT", "ETH-USDT")


def memory(clock: ManualClock | None = None, session: str = "s1") -> StrategyMemory:
    clock = clock or ManualClock(T0)
    guard = RiskGuard(daily_loss_limit=Decimal("100"), clock=clock)
    engine = Engine(EngineConfig(order_qty={s: Decimal("1") for s in SYMBOLS}, session=session,
                                 cooldown_s=30), FEES, guard, clock)
    return StrategyMemory(mode="paper", session=session, engine=engine, guard=guard,
                          pnl=PnlTracker())


def env_of(payload: Any, *, session: str = "s1", mode: str = "paper", ts: int = T0,
           msg_id: str = "x") -> Envelope:
    env, _ = decode(encode(payload, msg_id=msg_id, source="executor", session=session,
                           mode=mode, ts=ts))
    return env


def fill(n: int, venue: str, side: str, qty: str, price: str, trade: str, action: str,
         symbol: str = "BTC-USDT", fee: str = "0.01", fee_asset: str = "USDT") -> FillEvent:
    return FillEvent(venue=venue, symbol=symbol, client_order_id=f"c{n}",
                     venue_trade_id=f"t{n}", side=side,  # type: ignore[arg-type]
                     quantity=Decimal(qty), price=Decimal(price), fee=Decimal(fee),
                     fee_asset=fee_asset, ts=n, intent_id=f"{trade}:{action}", trade_id=trade)


def trip(n: int, trade: str, prices: tuple[str, str, str, str], qty: str = "0.3",
         symbol: str = "BTC-USDT") -> list[FillEvent]:
    legs = [("alpha", "buy", "open"), ("beta", "sell", "open"), ("beta", "buy", "close"),
            ("alpha", "sell", "close")]
    return [fill(n + i, v, side, qty, p, trade, a, symbol)
            for i, ((v, side, a), p) in enumerate(zip(legs, prices, strict=True))]


def apply_all(mem: StrategyMemory, events: list[Any], start: int = 1) -> None:
    for seq, ev in enumerate(events, start):
        mem.apply(seq, env_of(ev), ev)


def test_a_round_trip_books_guard_positions_pnl_and_statistics() -> None:
    mem = memory()
    apply_all(mem, trip(1, "T1", ("100", "101", "100.2", "100.5"), qty="1"))
    # proceeds 101 + 100.5 - costs 100 + 100.2 - fees 0.04 = 1.26
    assert mem.guard.realized["BTC-USDT"] == Decimal("1.26")
    assert mem.stats.metrics()[0].wins == 1 and mem.stats.portfolio().peak == Decimal("1.26")
    assert mem.guard.exposure("BTC-USDT") == 0
    assert {(p.venue, p.quantity, p.fills) for p in mem.positions.snaps()} == {
        ("alpha", Decimal(0), 2), ("beta", Decimal(0), 2)}
    assert mem.exec_seq == 4


def test_events_are_applied_once_by_sequence_and_by_fill_id() -> None:
    mem = memory()
    f = fill(1, "alpha", "buy", "1", "100", "T1", "open")
    assert mem.apply(5, env_of(f), f) is not None
    assert mem.apply(5, env_of(f), f) is None  # same sequence (replay overlap)
    assert mem.apply(3, env_of(f), f) is None  # older sequence
    assert mem.apply(9, env_of(f), f) is None  # re-published later: same fill id
    assert mem.exec_seq == 9
    assert mem.positions.snaps()[0].fills == 1


def test_other_modes_and_sessions_advance_the_sequence_but_change_nothing() -> None:
    mem = memory()
    f = fill(1, "alpha", "buy", "1", "100", "T1", "open")
    assert mem.apply(1, env_of(f, session="other"), f) is None
    assert mem.apply(2, env_of(f, mode="live"), f) is None
    assert mem.exec_seq == 2 and mem.positions.snaps() == [] and mem.guard.positions == {}


def test_positions_equal_the_ledger_replay_of_the_same_fills_to_the_last_digit() -> None:
    mem = memory()
    fills = [fill(1, "alpha", "buy", "0.3", "100.07", "A", "open"),
             fill(2, "alpha", "buy", "0.7", "99.13", "B", "open", fee="0.000007",
                  fee_asset="BTC"),
             fill(3, "alpha", "sell", "0.45", "101.3", "A", "close"),
             fill(4, "alpha", "sell", "0.9", "98.77", "B", "close")]
    apply_all(mem, list(fills))
    ledger = replay(fills)
    for p in mem.positions.snaps():
        state, count = ledger[(p.venue, p.symbol)]
        assert (p.quantity, p.avg_price, p.realized_pnl, p.fees, p.fills) == (
            state.quantity, state.avg_price, state.realized_pnl, state.fees, count)
    assert position_mismatch(mem.snapshot("manual", T0), ledger) is None


def test_a_trade_closed_on_a_day_already_rolled_over_counts_in_realized_only() -> None:
    clock = ManualClock(T0)
    mem = memory(clock)
    events = trip(1, "T1", ("100", "101", "100.2", "100.5"), qty="1")
    clock.advance(ns=DAY_NS)  # replayed the next day
    for seq, ev in enumerate(events, 1):
        mem.apply(seq, env_of(ev, ts=T0), ev)
    assert mem.guard.realized["BTC-USDT"] == Decimal("1.26")
    assert mem.guard.daily_pnl == 0 and mem.guard.day == (T0 + DAY_NS) // DAY_NS


def test_an_open_that_filled_nothing_cools_down_from_the_event_time() -> None:
    clock = ManualClock(T0)
    mem = memory(clock)
    from arb_common.messages import Intent

    intent = Intent(intent_id="T1:open", trade_id="T1", symbol="BTC-USDT", action="open",
                    buy_venue="alpha", sell_venue="beta", quantity=Decimal("1"),
                    buy_price=Decimal("100"), sell_price=Decimal("101"),
                    net_spread_bps=Decimal("9"))
    mem.engine.reconcile_intent(intent, T0)
    clock.advance(500)  # applied much later (replay): the cooldown still counts from the event
    for seq, side in enumerate(("buy", "sell"), 1):
        ev = OrderEvent(venue="alpha", symbol="BTC-USDT", client_order_id=f"o{side}", side=side,  # type: ignore[arg-type]
                        quantity=Decimal("1"), filled_quantity=Decimal(0), status="REJECTED",
                        intent_id="T1:open", trade_id="T1")
        mem.apply(seq, env_of(ev, ts=T0 + 7), ev)
    assert mem.engine.open_trades() == {}
    assert mem.engine.get_state()["cooldown_until"] == {"BTC-USDT": T0 + 7 + 30 * 10**9}


def test_snapshot_survives_the_wire_and_restores_exactly() -> None:
    mem = memory()
    apply_all(mem, trip(1, "T1", ("100", "101", "100.2", "100.5"))
              + trip(5, "T2", ("100", "100.8", "100.9", "100.1"), symbol="ETH-USDT")
              + [fill(9, "alpha", "buy", "0.2", "100.3", "T3", "open")])
    snap = mem.snapshot("periodic", T0 + 1)
    assert guard_inconsistency(snap) is None
    wire = orjson.loads(orjson.dumps(to_wire(snap)))  # through JSON (and JSONB) and back
    back = decode_snapshot(orjson.dumps(wire["snapshot"]))
    assert checksum(back) == wire["checksum"]
    fresh = memory()
    fresh.restore(back)
    assert fresh.state() == mem.state()


# ---------------------------------------------------------------- property: any cut point

_prices = st.decimals(min_value=Decimal("90"), max_value=Decimal("110"), places=2)
_qty = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("2"), places=3)


@st.composite
def histories(draw: st.DrawFn) -> list[FillEvent | OrderEvent]:
    events: list[FillEvent | OrderEvent] = []
    for t in range(draw(st.integers(1, 6))):
        symbol = draw(st.sampled_from(SYMBOLS))
        qty = str(draw(_qty))
        prices = tuple(str(draw(_prices)) for _ in range(4))
        legs = trip(10 * t, f"T{t}", prices, qty=qty, symbol=symbol)  # type: ignore[arg-type]
        events.extend(legs[: draw(st.integers(1, 4))])  # some trades stay open
    return events


@given(histories(), st.data())
@settings(max_examples=60, deadline=None)
def test_restore_at_any_point_plus_replay_equals_the_uninterrupted_run(
        events: list[FillEvent | OrderEvent], data: st.DataObject) -> None:
    whole = memory()
    apply_all(whole, events)
    cut = data.draw(st.integers(0, len(events)))
    first = memory()
    apply_all(first, events[:cut])
    snap = decode_snapshot(orjson.dumps(to_wire(first.snapshot("periodic", T0))["snapshot"]))
    restarted = memory()
    restarted.restore(snap)
    overlap = data.draw(st.integers(0, cut))  # replay may start before exec_seq + 1
    apply_all(restarted, events[cut - overlap:], start=cut - overlap + 1)
    assert restarted.state() == whole.state()
    assert guard_inconsistency(restarted.snapshot("manual", T0)) is None


def test_the_save_request_body_is_the_contracts_to_wire() -> None:
    from arb_strategy.snapshots import wire_bytes

    mem = memory()
    apply_all(mem, trip(1, "T1", ("100", "101", "100.2", "100.5")))
    snap = mem.snapshot("trade_closed", T0)
    assert orjson.loads(wire_bytes(snap)) == orjson.loads(orjson.dumps(to_wire(snap)))

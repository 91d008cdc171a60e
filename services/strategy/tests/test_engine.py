"""Engine state machine: flat -> open -> close -> cooldown, with the injected clock."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from arb_common.clock import ManualClock
from arb_common.messages import Book
from arb_strategy.engine import Engine, EngineConfig
from arb_strategy.risk_guard import RiskGuard

T0 = 1_700_000_000_000_000_000


def lv(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in pairs]


def book(venue: str, bid: str, ask: str, *, seq: int = 1, qty: str = "10",
         symbol: str = "BTC-USDT", recv_ts: int = T0) -> Book:
    """A one-level-per-side book."""
    return Book(venue=venue, symbol=symbol, seq=seq, bids=lv((bid, qty)), asks=lv((ask, qty)),
                venue_ts=recv_ts // 1_000_000, recv_ts=recv_ts)


FEES = {"alpha": Decimal("0.001"), "beta": Decimal("0.001")}
NS = 1_000_000_000


def make(session: str = "s1", **cfg: object) -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    guard = RiskGuard(daily_loss_limit=Decimal("100"), clock=clock,
                      default_exposure_cap=Decimal("100000"))
    conf = EngineConfig(order_qty={"BTC-USDT": Decimal("1")}, session=session, **cfg)  # type: ignore[arg-type]
    return Engine(conf, FEES, guard, clock), clock


def feed(engine: Engine, clock: ManualClock, a: tuple[str, str], b: tuple[str, str],
         seq: int) -> list:  # type: ignore[type-arg]
    now = clock.now_ns()
    first = engine.on_book(book("alpha", *a, seq=seq, recv_ts=now - 1000)).intents
    return first + engine.on_book(book("beta", *b, seq=seq + 1, recv_ts=now)).intents


WIDE = (("100.0", "100.1"), ("100.6", "100.7"))  # buy alpha 100.1, sell beta 100.6
REVERTED = (("100.2", "100.3"), ("100.0", "100.1"))  # exit: buy beta 100.1, sell alpha 100.2


def test_opens_on_a_wide_spread_with_deterministic_ids() -> None:
    engine, clock = make()
    assert engine.on_book(book("alpha", "100.0", "100.1", seq=7, recv_ts=T0 - 5)).intents == []
    decision = engine.on_book(book("beta", "100.6", "100.7", seq=42, recv_ts=T0))
    [intent] = decision.intents
    key = "s1|BTC-USDT|alpha:7|beta:42"
    trade_id = f"BTC-USDT-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    assert intent.trade_id == trade_id and intent.intent_id == f"{trade_id}:open"
    assert (intent.action, intent.buy_venue, intent.sell_venue) == ("open", "alpha", "beta")
    assert (intent.quantity, intent.buy_price, intent.sell_price) == (
        Decimal("1"), Decimal("100.1"), Decimal("100.6"))
    # (100.6 * 0.999 - 100.1 * 1.001) / 100.1 * 1e4 = 29.9001 bps
    assert intent.net_spread_bps == Decimal("29.9001")
    assert intent.origin_ts == T0  # the newer triggering book
    assert decision.spread_bps is not None and decision.spread_bps > 29


def test_same_books_give_same_ids_and_another_session_other_ids() -> None:
    ids = []
    for session in ("s1", "s1", "s2"):
        engine, clock = make(session)
        ids.append(feed(engine, clock, *WIDE, seq=1)[0].intent_id)
    assert ids[0] == ids[1] != ids[2]


def test_holds_until_the_gap_reverts_then_closes_reversed_and_cools_down() -> None:
    engine, clock = make(cooldown_s=5.0)
    [opened] = feed(engine, clock, *WIDE, seq=1)
    clock.advance(1)
    assert feed(engine, clock, *WIDE, seq=10) == []  # still wide: exit costs ~-89 bps
    clock.advance(1)
    [closed] = feed(engine, clock, *REVERTED, seq=20)
    assert closed.intent_id == f"{opened.trade_id}:close" and closed.action == "close"
    assert (closed.buy_venue, closed.sell_venue) == ("beta", "alpha")
    assert closed.reason == "reverted"
    # (100.2 * 0.999 - 100.1 * 1.001) / 100.1 * 1e4 = -0.1003 / 100.1 * 1e4 = -10.02 >= -20
    assert closed.net_spread_bps == Decimal("-10.0200")
    clock.advance(4.9)
    assert feed(engine, clock, *WIDE, seq=30) == []  # cooling down
    clock.advance(0.2)
    [again] = feed(engine, clock, *WIDE, seq=40)
    assert again.action == "open" and again.trade_id != opened.trade_id


def test_max_holding_time_forces_the_close() -> None:
    engine, clock = make(max_hold_s=120.0)
    [opened] = feed(engine, clock, *WIDE, seq=1)
    clock.advance(119)
    assert feed(engine, clock, *WIDE, seq=10) == []
    clock.advance(1)
    [closed] = feed(engine, clock, *WIDE, seq=20)
    assert closed.reason == "max_hold" and closed.trade_id == opened.trade_id


def test_trading_disabled_blocks_opens_but_not_closes() -> None:
    engine, clock = make()
    engine.trading_enabled = False
    assert feed(engine, clock, *WIDE, seq=1) == []
    engine.trading_enabled = True
    [opened] = feed(engine, clock, *WIDE, seq=10)
    engine.trading_enabled = False
    [closed] = feed(engine, clock, *REVERTED, seq=20)
    assert closed.trade_id == opened.trade_id


def test_below_threshold_stale_or_shallow_books_do_not_trade() -> None:
    engine, clock = make()
    assert feed(engine, clock, ("100.0", "100.1"), ("100.3", "100.4"), seq=1) == []  # ~0 bps
    engine, clock = make(book_stale_s=2.0)
    engine.on_book(book("alpha", "100.0", "100.1", seq=1, recv_ts=T0))
    clock.advance(2.5)
    assert engine.on_book(book("beta", "100.6", "100.7", seq=2, recv_ts=clock.now_ns())).intents \
        == []
    engine, clock = make()
    engine.on_book(book("alpha", "100.0", "100.1", qty="0.5", recv_ts=T0))
    assert engine.on_book(book("beta", "100.6", "100.7", recv_ts=T0)).intents == []


def test_an_older_book_does_not_replace_a_newer_one() -> None:
    engine, clock = make()
    engine.on_book(book("alpha", "100.0", "100.1", seq=2, recv_ts=T0))
    engine.on_book(book("alpha", "90", "90.1", seq=1, recv_ts=T0 - 10))
    assert engine.symbols["BTC-USDT"].books["alpha"].seq == 2


def test_risk_guard_refusal_is_reported_and_nothing_opens() -> None:
    engine, clock = make()
    engine.guard.record_trade_pnl("BTC-USDT", Decimal("-100"))
    engine.on_book(book("alpha", "100.0", "100.1", recv_ts=T0))
    decision = engine.on_book(book("beta", "100.6", "100.7", recv_ts=T0))
    assert decision.intents == []
    [block] = decision.blocks
    assert (block.symbol, block.kind) == ("BTC-USDT", "daily_loss_limit")


def test_abort_returns_to_the_previous_state() -> None:
    engine, clock = make()
    [opened] = feed(engine, clock, *WIDE, seq=1)
    engine.abort(opened, retry_after_s=1.0)
    assert engine.open_trades() == {}
    assert feed(engine, clock, *WIDE, seq=1) == []  # failed open: short pause, no hammering
    clock.advance(1.0)
    [again] = feed(engine, clock, *WIDE, seq=1)
    assert again.intent_id == opened.intent_id  # a retry republishes the same id
    trade = engine.open_trades()["BTC-USDT"]
    clock.advance(5)
    [closed] = feed(engine, clock, *REVERTED, seq=5)
    engine.abort(closed)
    assert engine.open_trades()["BTC-USDT"] == trade  # same trade, same holding clock
    [retried] = feed(engine, clock, *REVERTED, seq=5)
    assert retried.intent_id == closed.intent_id


def _leg(intent, side: str, status: str, filled: str):  # type: ignore[no-untyped-def]
    from arb_common.messages import OrderEvent

    return OrderEvent(venue=intent.buy_venue if side == "buy" else intent.sell_venue,
                      symbol=intent.symbol, client_order_id=f"c-{side}", side=side,  # type: ignore[arg-type]
                      quantity=intent.quantity, filled_quantity=Decimal(filled), status=status,  # type: ignore[arg-type]
                      intent_id=intent.intent_id, trade_id=intent.trade_id)


def test_no_open_while_the_reconciler_gate_is_closed_for_a_venue() -> None:
    engine, clock = make()
    engine.set_venue_ready("alpha", True)
    engine.set_venue_ready("beta", False)
    assert feed(engine, clock, *WIDE, seq=1) == []
    engine.set_venue_ready("beta", True)
    clock.advance(0.1)
    assert [i.action for i in feed(engine, clock, *WIDE, seq=3)] == ["open"]


def test_an_open_that_filled_nothing_returns_to_flat_instead_of_closing_a_ghost() -> None:
    engine, clock = make(cooldown_s=1.0)
    [opened] = feed(engine, clock, *WIDE, seq=1)
    engine.on_order(_leg(opened, "buy", "REJECTED", "0"))
    assert engine.open_trades()  # one leg still unknown
    engine.on_order(_leg(opened, "sell", "REJECTED", "0"))
    assert engine.open_trades() == {}
    clock.advance(0.5)
    assert feed(engine, clock, *REVERTED, seq=3) == []  # no close of a trade that never was


def test_a_partially_filled_open_closes_only_what_filled() -> None:
    engine, clock = make()
    [opened] = feed(engine, clock, *WIDE, seq=1)
    engine.on_order(_leg(opened, "buy", "FILLED", "1"))
    engine.on_order(_leg(opened, "sell", "EXPIRED", "0.4"))
    clock.advance(0.1)
    [closed] = feed(engine, clock, *REVERTED, seq=3)
    assert closed.action == "close" and closed.quantity == Decimal("0.4")


# ---------------------------------------------------------------- memory


def _restarted(engine: Engine) -> tuple[Engine, ManualClock]:
    """A new engine (another process) restored from ``engine``'s state through JSON."""
    import orjson

    fresh, clock = make()
    fresh.restore_state(orjson.loads(orjson.dumps(engine.get_state())))
    return fresh, clock


def test_state_round_trips_open_trade_open_legs_and_cooldown_exactly() -> None:
    engine, clock = make(cooldown_s=5.0)
    [opened] = feed(engine, clock, *WIDE, seq=1)
    engine.on_order(_leg(opened, "buy", "FILLED", "1"))
    engine.on_order(_leg(opened, "sell", "PARTIALLY_FILLED", "0.5"))  # not terminal yet
    fresh, _ = _restarted(engine)
    assert fresh.get_state() == engine.get_state()
    assert fresh.open_trades() == engine.open_trades()
    state = engine.get_state()
    assert state["open"]["BTC-USDT"]["trade_id"] == opened.trade_id
    assert state["open_legs"] == {"BTC-USDT": {"buy": "1"}}
    clock.advance(1)
    [closed] = feed(engine, clock, *REVERTED, seq=5)
    fresh, _ = _restarted(engine)
    assert fresh.get_state() == engine.get_state()
    assert engine.get_state()["closing"]["BTC-USDT"]["trade_id"] == opened.trade_id
    engine.published(closed)  # on the bus: nothing to undo any more
    assert engine.get_state()["closing"] == {}
    assert engine.get_state()["cooldown_until"] == {"BTC-USDT": clock.now_ns() + 5 * NS}


def test_the_open_trade_holds_what_its_intent_says_so_the_intent_rebuilds_it() -> None:
    engine, clock = make()
    decision = engine.on_book(book("alpha", "100.0", "100.1", seq=7, recv_ts=T0 - 5))
    decision = engine.on_book(book("beta", "100.6", "100.7", seq=42, recv_ts=T0))
    [intent] = decision.intents
    assert decision.ts == clock.now_ns()
    fresh, _ = make()
    assert fresh.reconcile_intent(intent, decision.ts)
    assert fresh.get_state() == engine.get_state()
    assert not fresh.reconcile_intent(intent, decision.ts)  # idempotent


def test_the_last_close_intent_leaves_the_symbol_flat_cooling_down_from_its_time() -> None:
    engine, clock = make(cooldown_s=5.0)
    feed(engine, clock, *WIDE, seq=1)
    before = engine.get_state()
    clock.advance(3)
    decision = engine.on_book(book("alpha", "100.2", "100.3", seq=20, recv_ts=clock.now_ns()))
    decision = engine.on_book(book("beta", "100.0", "100.1", seq=21, recv_ts=clock.now_ns()))
    [closed] = decision.intents
    engine.published(closed)
    fresh, _ = make(cooldown_s=5.0)
    fresh.restore_state(before)  # the snapshot had the trade open
    assert fresh.reconcile_intent(closed, decision.ts)
    assert fresh.get_state() == engine.get_state()


def test_restoring_a_state_of_an_unknown_symbol_ignores_it() -> None:
    engine, _ = make()
    engine.restore_state({"v": 1, "open": {}, "closing": {},
                          "cooldown_until": {"DOGE-USDT": 5}, "open_legs": {}})
    assert engine.get_state()["cooldown_until"] == {}

"""Property test: random order sequences keep the account consistent."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arb_venue_sim.market import Market
from arb_venue_sim.matching import Engine, OrderRequest
from arb_venue_sim.orders import BinanceError

D = Decimal
START = {"USDT": D("30000"), "BTC": D("0.3"), "ETH": D("4")}
SYMBOLS = ["BTCUSDT", "ETHUSDT"]

side = st.sampled_from(["BUY", "SELL"])
symbol = st.sampled_from(SYMBOLS)
op = st.one_of(
    st.tuples(st.just("market"), symbol, side, st.integers(1, 40_000)),
    st.tuples(st.just("quote"), symbol, side, st.integers(5, 20_000)),
    st.tuples(st.just("limit"), symbol, side, st.sampled_from(["GTC", "IOC", "FOK"]),
              st.integers(-15, 15), st.integers(1, 40_000)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.integers(1, 20)),
)


def _request(market: Market, engine: Engine, o: tuple) -> OrderRequest | None:
    kind = o[0]
    if kind in ("market", "quote"):
        _, sym, sd, n = o
        spec = market.by_wire[sym]
        if kind == "quote":
            return OrderRequest(symbol=sym, side=sd, type="MARKET", quote_qty=D(n))
        return OrderRequest(symbol=sym, side=sd, type="MARKET", quantity=n * spec.step_size)
    _, sym, sd, tif, offset, n = o
    spec = market.by_wire[sym]
    book = market.book(engine.venue, sym)
    ref = book.best("asks" if sd == "BUY" else "bids")
    assert ref is not None
    price = ref[0] + offset * spec.level_step * (1 if sd == "SELL" else -1) * -1
    return OrderRequest(symbol=sym, side=sd, type="LIMIT", time_in_force=tif,
                        quantity=n * spec.step_size, price=price)


def _expected_totals(engine: Engine, market: Market) -> dict[str, Decimal]:
    totals = dict(START)
    for t in engine.trades:
        spec = market.by_wire[t.symbol]
        sign = 1 if t.side == "BUY" else -1
        totals[spec.base] = totals.get(spec.base, D(0)) + sign * t.qty
        totals[spec.quote] = totals.get(spec.quote, D(0)) - sign * t.price * t.qty
        totals[t.commission_asset] = totals.get(t.commission_asset, D(0)) - t.commission
    return totals


def _apply(market: Market, engine: Engine, o: tuple) -> None:
    if o[0] == "tick":
        for _ in range(o[1]):
            market.step(0.2)
            for sym in SYMBOLS:
                engine.on_book_moved(sym)
    elif o[0] == "cancel":
        opened = engine.open_orders()
        if opened:
            engine.cancel(opened[o[1] % len(opened)])
    else:
        req = _request(market, engine, o)
        assert req is not None
        try:
            engine.place(req)
        except BinanceError as exc:
            assert exc.code in (-2010, -1013), exc


def _check_orders(engine: Engine) -> None:
    for order in engine.orders.values():
        assert order.executed_qty == sum((t.qty for t in order.fills), D(0))
        assert order.cum_quote == sum((t.price * t.qty for t in order.fills), D(0))
        if order.orig_qty > 0:
            assert order.executed_qty <= order.orig_qty
        if order.status == "FILLED" and order.orig_qty > 0:
            assert order.executed_qty == order.orig_qty


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=40), fee_asset=st.sampled_from(["quote", "received"]))
def test_random_order_sequences_keep_balances_consistent(ops: list, fee_asset: str) -> None:
    market = Market(["alpha"], ["BTC-USDT", "ETH-USDT"], seed=11, depth=20)
    engine = Engine("alpha", market, START, taker_fee=D("0.001"), maker_fee=D("0.0008"),
                    fee_asset=fee_asset, id_base=1)
    for o in ops:
        _apply(market, engine, o)
        for bal in engine.account.balances.values():
            assert bal.free >= 0 and bal.locked >= 0
    _check_orders(engine)
    locked: dict[str, Decimal] = {}
    for order in engine.open_orders():
        locked[order.locked_asset] = locked.get(order.locked_asset, D(0)) + order.locked
    for asset, total in _expected_totals(engine, market).items():
        bal = engine.account.get(asset)
        assert bal.free + bal.locked == total, asset
        assert bal.locked == locked.get(asset, D(0)), asset

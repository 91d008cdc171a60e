"""Binance REST trading on one simulated venue, through the ASGI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx
import pytest
from prometheus_client import REGISTRY

from arb_venue_sim.venue import Venue

SignedCall = Callable[..., Awaitable[httpx.Response]]

D = Decimal


def bal(venue: Venue, asset: str) -> tuple[Decimal, Decimal]:
    b = venue.engine.account.get(asset)
    return b.free, b.locked


async def test_market_buy_walks_the_book_with_exact_fees_and_balances(
        call: SignedCall, alpha: Venue) -> None:
    asks = alpha.market.book("alpha", "BTCUSDT").levels("asks")
    qty = asks[0][1] + asks[1][1] + D("0.00100")  # takes two levels and part of a third
    usdt0, btc0 = bal(alpha, "USDT")[0], bal(alpha, "BTC")[0]
    resp = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                      quantity=str(qty), newClientOrderId="mkt-1")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert list(body)[:5] == ["symbol", "orderId", "orderListId", "clientOrderId",
                              "transactTime"]
    assert body["status"] == "FILLED" and body["type"] == "MARKET" and body["side"] == "BUY"
    assert body["clientOrderId"] == "mkt-1" and body["price"] == "0.00000000"
    fills = body["fills"]
    assert [(D(f["price"]), D(f["qty"])) for f in fills] == [
        asks[0], asks[1], (asks[2][0], D("0.00100"))]
    cost = sum(D(f["price"]) * D(f["qty"]) for f in fills)
    fees = sum(D(f["commission"]) for f in fills)
    for f in fills:
        assert f["commissionAsset"] == "USDT"
        assert D(f["commission"]) == (D(f["price"]) * D(f["qty"]) * D("0.001")).quantize(
            D("1e-8"))
        assert isinstance(f["tradeId"], int)
    assert D(body["executedQty"]) == qty and D(body["origQty"]) == qty
    assert D(body["cummulativeQuoteQty"]) == cost
    assert bal(alpha, "USDT") == (usdt0 - cost - fees, 0)
    assert bal(alpha, "BTC") == (btc0 + qty, 0)
    # the liquidity is gone from the venue's book
    after = alpha.market.book("alpha", "BTCUSDT").levels("asks")
    assert after[0] == (asks[2][0], asks[2][1] - D("0.00100"))


async def test_market_sell_charges_fee_in_quote(call: SignedCall, alpha: Venue) -> None:
    bids = alpha.market.book("alpha", "ETHUSDT").levels("bids")
    usdt0, eth0 = bal(alpha, "USDT")[0], bal(alpha, "ETH")[0]
    qty = min(bids[0][1], D("0.5"))
    resp = await call("POST", "/api/v3/order", symbol="ETHUSDT", side="SELL", type="MARKET",
                      quantity=str(qty))
    body = resp.json()
    assert body["status"] == "FILLED"
    (fill,) = body["fills"]
    proceeds = bids[0][0] * qty
    assert D(fill["commission"]) == (proceeds * D("0.001")).quantize(D("1e-8"))
    assert bal(alpha, "ETH")[0] == eth0 - qty
    assert bal(alpha, "USDT")[0] == usdt0 + proceeds - D(fill["commission"])


async def test_ack_and_result_response_types(call: SignedCall) -> None:
    ack = (await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                      quantity="0.001", newOrderRespType="ACK")).json()
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    res = (await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                      quantity="0.001", newOrderRespType="RESULT")).json()
    assert "fills" not in res and res["status"] == "FILLED"


async def test_limit_ioc_partially_filled_expires(call: SignedCall, alpha: Venue) -> None:
    asks = alpha.market.book("alpha", "BTCUSDT").levels("asks")
    qty = asks[0][1] + D("5")
    resp = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                      timeInForce="IOC", quantity=str(qty), price=str(asks[0][0]))
    body = resp.json()
    assert body["status"] == "EXPIRED"
    assert D(body["executedQty"]) == asks[0][1]
    assert [D(f["price"]) for f in body["fills"]] == [asks[0][0]]
    assert alpha.engine.open_orders() == []


async def test_limit_fok_that_cannot_fill_expires_without_fills(call: SignedCall,
                                                                alpha: Venue) -> None:
    asks = alpha.market.book("alpha", "BTCUSDT").levels("asks")
    resp = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                      timeInForce="FOK", quantity=str(asks[0][1] + D("5")),
                      price=str(asks[0][0]))
    body = resp.json()
    assert body["status"] == "EXPIRED" and body["fills"] == []
    assert alpha.market.book("alpha", "BTCUSDT").levels("asks")[0] == asks[0]


async def test_gtc_limit_rests_locks_funds_and_cancels(call: SignedCall, alpha: Venue) -> None:
    usdt0 = bal(alpha, "USDT")[0]
    resp = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                      timeInForce="GTC", quantity="0.01", price="50000.00",
                      newClientOrderId="gtc-1")
    body = resp.json()
    assert body["status"] == "NEW" and body["fills"] == []
    locked = D("500") + D("0.5")  # cost + worst-case fee
    assert bal(alpha, "USDT") == (usdt0 - locked, locked)
    dup = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                     timeInForce="GTC", quantity="0.01", price="50000.00",
                     newClientOrderId="gtc-1")
    assert dup.status_code == 400
    assert dup.json() == {"code": -2010, "msg": "Duplicate order sent."}
    got = (await call("GET", "/api/v3/order", symbol="BTCUSDT",
                      origClientOrderId="gtc-1")).json()
    assert got["orderId"] == body["orderId"] and got["status"] == "NEW"
    assert got["price"] == "50000.00000000" and got["isWorking"] is True
    by_id = (await call("GET", "/api/v3/order", symbol="BTCUSDT",
                        orderId=body["orderId"])).json()
    assert by_id == got
    opened = (await call("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
    assert [o["clientOrderId"] for o in opened] == ["gtc-1"]
    all_open = (await call("GET", "/api/v3/openOrders")).json()
    assert [o["clientOrderId"] for o in all_open] == ["gtc-1"]
    assert (await call("GET", "/api/v3/openOrders", symbol="ETHUSDT")).json() == []
    canceled = (await call("DELETE", "/api/v3/order", symbol="BTCUSDT",
                           origClientOrderId="gtc-1")).json()
    assert canceled["status"] == "CANCELED" and canceled["origClientOrderId"] == "gtc-1"
    assert bal(alpha, "USDT") == (usdt0, 0)
    again = await call("DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="gtc-1")
    assert again.json() == {"code": -2011, "msg": "Unknown order sent."}
    # the client id is free again once the order is no longer open
    reuse = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                       timeInForce="GTC", quantity="0.01", price="50000.00",
                       newClientOrderId="gtc-1")
    assert reuse.json()["status"] == "NEW"


async def test_resting_order_fills_as_maker_when_market_crosses(call: SignedCall,
                                                               alpha: Venue) -> None:
    best_ask = alpha.market.book("alpha", "SOLUSDT").levels("asks")[0][0]
    usdt0, sol0 = bal(alpha, "USDT")[0], bal(alpha, "SOL")[0]
    body = (await call("POST", "/api/v3/order", symbol="SOLUSDT", side="SELL", type="LIMIT",
                       timeInForce="GTC", quantity="2.000", price=str(best_ask + D("0.05")),
                       newClientOrderId="mk1")).json()
    assert body["status"] == "NEW"
    assert bal(alpha, "SOL") == (sol0 - 2, 2)
    order = alpha.engine.orders[body["orderId"]]
    book = alpha.market.book("alpha", "SOLUSDT")
    # move the market through the order price
    alpha.market.models["SOL-USDT"].common *= 1.01
    alpha.market.step(0.0)
    alpha.engine.on_book_moved("SOLUSDT")
    assert book.best("bids")[0] >= order.price
    assert order.status == "FILLED" and order.fills[0].is_maker
    fee = (order.price * 2 * D("0.001")).quantize(D("1e-8"))
    assert bal(alpha, "SOL") == (sol0 - 2, 0)
    assert bal(alpha, "USDT") == (usdt0 + order.price * 2 - fee, 0)
    trades = (await call("GET", "/api/v3/myTrades", symbol="SOLUSDT")).json()
    assert trades[-1]["isMaker"] is True and trades[-1]["isBuyer"] is False


async def test_unknown_order_query_and_missing_reference(call: SignedCall) -> None:
    resp = await call("GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="nope")
    assert resp.status_code == 400
    assert resp.json() == {"code": -2013, "msg": "Order does not exist."}
    resp = await call("GET", "/api/v3/order", symbol="BTCUSDT")
    assert resp.json()["code"] == -1102


async def test_filter_failures_and_bad_params(call: SignedCall) -> None:
    cases = [
        ({"quantity": "0.000001"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0.000015"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0.00002"}, -1013, "Filter failure: NOTIONAL"),
        ({"quantity": "1e-3"}, -1100, None),
        ({"quantity": "0.001", "symbol": "DOGEUSDT"}, -1121, "Invalid symbol."),
        ({"quantity": "0.001", "side": "HOLD"}, -1117, "Invalid side."),
        ({"quantity": "0.001", "type": "STOP"}, -1116, "Invalid orderType."),
    ]
    for extra, code, msg in cases:
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", **extra}
        body = (await call("POST", "/api/v3/order", **params)).json()
        assert body["code"] == code, (extra, body)
        if msg:
            assert body["msg"] == msg
    body = (await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                       timeInForce="GTC", quantity="0.001", price="50000.001")).json()
    assert body == {"code": -1013, "msg": "Filter failure: PRICE_FILTER"}
    body = (await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                       type="MARKET")).json()
    assert body["code"] == -1102


async def test_insufficient_balance_is_rejected_and_recorded(call: SignedCall,
                                                             alpha: Venue) -> None:
    resp = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL", type="MARKET",
                      quantity="11", newClientOrderId="toomuch")
    assert resp.status_code == 400
    assert resp.json() == {"code": -2010,
                           "msg": "Account has insufficient balance for requested action."}
    rec = alpha.engine.records[-1]
    assert rec.status == "REJECTED" and rec.client_order_id == "toomuch"


async def test_market_buy_by_quote_quantity(call: SignedCall, alpha: Venue) -> None:
    body = (await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                       quoteOrderQty="1000")).json()
    assert body["status"] == "FILLED"
    assert D(body["cummulativeQuoteQty"]) <= 1000
    assert D(body["executedQty"]) % D("0.00001") == 0


async def test_my_trades_filters(call: SignedCall) -> None:
    ids = []
    for i in range(3):
        body = (await call("POST", "/api/v3/order", symbol="ETHUSDT", side="BUY",
                           type="MARKET", quantity="0.01", newClientOrderId=f"t{i}")).json()
        ids.append(body["orderId"])
    trades = (await call("GET", "/api/v3/myTrades", symbol="ETHUSDT")).json()
    assert [t["orderId"] for t in trades] == ids
    t0 = trades[0]
    assert set(t0) >= {"symbol", "id", "orderId", "price", "qty", "quoteQty", "commission",
                       "commissionAsset", "time", "isBuyer", "isMaker", "isBestMatch"}
    assert t0["isBuyer"] is True and t0["isMaker"] is False
    by_order = (await call("GET", "/api/v3/myTrades", symbol="ETHUSDT", orderId=ids[1])).json()
    assert [t["orderId"] for t in by_order] == [ids[1]]
    from_id = (await call("GET", "/api/v3/myTrades", symbol="ETHUSDT",
                          fromId=trades[1]["id"], limit=1)).json()
    assert [t["id"] for t in from_id] == [trades[1]["id"]]
    last = (await call("GET", "/api/v3/myTrades", symbol="ETHUSDT", limit=1)).json()
    assert [t["id"] for t in last] == [trades[-1]["id"]]
    window = (await call("GET", "/api/v3/myTrades", symbol="ETHUSDT",
                         startTime=t0["time"], endTime=t0["time"] + 60_000)).json()
    assert len(window) == 3
    assert (await call("GET", "/api/v3/myTrades", symbol="BTCUSDT")).json() == []


async def test_account_reports_balances_and_commission_rates(call: SignedCall) -> None:
    acct = (await call("GET", "/api/v3/account")).json()
    assert acct["commissionRates"]["taker"] == "0.00100000"
    assert acct["takerCommission"] == 10
    balances = {b["asset"]: b for b in acct["balances"]}
    assert balances["USDT"] == {"asset": "USDT", "free": "1000000.00000000",
                                "locked": "0.00000000"}
    assert balances["BTC"]["free"] == "10.00000000"


async def test_public_market_data(client: httpx.AsyncClient, alpha: Venue) -> None:
    assert (await client.get("/api/v3/ping")).json() == {}
    assert "serverTime" in (await client.get("/api/v3/time")).json()
    info = (await client.get("/api/v3/exchangeInfo")).json()
    syms = {s["symbol"]: s for s in info["symbols"]}
    assert set(syms) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    btc = syms["BTCUSDT"]
    assert btc["status"] == "TRADING" and btc["baseAsset"] == "BTC"
    assert btc["quoteAsset"] == "USDT" and "MARKET" in btc["orderTypes"]
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    one = (await client.get("/api/v3/exchangeInfo?symbol=ETHUSDT")).json()
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    bad = await client.get("/api/v3/depth?symbol=NOPE")
    assert bad.status_code == 400 and bad.json()["code"] == -1121
    depth = (await client.get("/api/v3/depth?symbol=BTCUSDT&limit=20")).json()
    assert list(depth) == ["lastUpdateId", "bids", "asks"]
    assert len(depth["bids"]) == 20 and len(depth["asks"]) == 20
    bids = [D(p) for p, _ in depth["bids"]]
    asks = [D(p) for p, _ in depth["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert D("50000") < bids[0] < D("70000")
    assert depth["lastUpdateId"] == alpha.market.book("alpha", "BTCUSDT").update_id
    full = (await client.get("/api/v3/depth?symbol=BTCUSDT")).json()
    assert len(full["bids"]) >= 20
    tick = (await client.get("/api/v3/ticker/bookTicker?symbol=BTCUSDT")).json()
    assert tick["bidPrice"] == depth["bids"][0][0] and tick["askQty"] == depth["asks"][0][1]
    ticks = (await client.get('/api/v3/ticker/bookTicker?symbols=["BTCUSDT","SOLUSDT"]')).json()
    assert [t["symbol"] for t in ticks] == ["BTCUSDT", "SOLUSDT"]
    assert len((await client.get("/api/v3/ticker/bookTicker")).json()) == 3


async def test_unexpected_handler_error_answers_minus_1000_and_the_venue_keeps_serving(
        call: SignedCall, alpha: Venue, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    labels = {"venue": "alpha", "reason": "internal_error"}
    before = REGISTRY.get_sample_value("arb_venue_sim_rejects_total", labels) or 0.0

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("matching engine bug")

    monkeypatch.setattr(alpha.engine, "place", broken)
    resp = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                      quantity="0.001", newClientOrderId="boom-1")
    assert resp.status_code == 500
    assert resp.json() == {"code": -1000, "msg": "An unknown error occurred while processing "
                           "the request."}
    assert REGISTRY.get_sample_value("arb_venue_sim_rejects_total", labels) == before + 1
    assert any("request failed venue=alpha POST /api/v3/order" in r.getMessage()
               for r in caplog.records)
    monkeypatch.undo()
    again = await call("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                       quantity="0.001", newClientOrderId="boom-2")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "FILLED"

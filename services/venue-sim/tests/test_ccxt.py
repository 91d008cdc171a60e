"""ccxt (async, binance) against a real simulator server, configured as in
/work/shared/protocols/ccxt-binance-local.md section 1a."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest

API_SECTIONS = {
    "public": "/api/v3", "private": "/api/v3", "v1": "/api/v1",
    "sapi": "/sapi/v1", "sapiV2": "/sapi/v2", "sapiV3": "/sapi/v3", "sapiV4": "/sapi/v4",
    "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data", "dapiPublic": "/dapi/v1", "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2", "dapiData": "/futures/data", "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1", "papi": "/papi/v1", "papiV2": "/papi/v2",
}


@pytest.fixture
async def exchange(running: Any) -> AsyncIterator[Any]:
    venue = running.sim.venues["alpha"]
    local = running.url("alpha")
    assert len(API_SECTIONS) == 22
    ex = ccxt.binance({
        "apiKey": venue.creds.api_key,
        "secret": venue.creds.api_secret,
        "enableRateLimit": False,
        "timeout": 5000,
        "urls": {"api": {k: local + v for k, v in API_SECTIONS.items()}},
        "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False,
                    "fetchMarkets": {"types": ["spot"]}, "adjustForTimeDifference": False},
    })
    try:
        yield ex
    finally:
        await ex.close()


async def test_ccxt_trading_flow_parses(exchange: Any, running: Any) -> None:
    venue = running.sim.venues["alpha"]
    markets = await exchange.load_markets()
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert btc["active"] is True and btc["precision"]["amount"] == 0.00001
    assert btc["precision"]["price"] == 0.01 and btc["limits"]["cost"]["min"] == 5

    book = await exchange.fetch_order_book("BTC/USDT")
    assert len(book["bids"]) >= 20 and book["bids"][0][0] < book["asks"][0][0]
    assert isinstance(book["nonce"], int)

    order = await exchange.create_order("BTC/USDT", "market", "buy", 0.01,
                                        params={"clientOrderId": "ccxt-mkt-1"})
    assert order["status"] == "closed" and order["filled"] == 0.01
    assert order["clientOrderId"] == "ccxt-mkt-1" and order["id"]
    assert order["cost"] > 0 and order["average"] > 50000
    assert order["fee"]["currency"] == "USDT" and order["fee"]["cost"] > 0
    assert order["trades"] and all(t["id"] for t in order["trades"])

    fetched = await exchange.fetch_order(None, "BTC/USDT",
                                         params={"clientOrderId": "ccxt-mkt-1"})
    assert fetched["id"] == order["id"] and fetched["status"] == "closed"
    assert fetched["filled"] == 0.01 and fetched["side"] == "buy"

    limit_price = round(book["bids"][0][0] * 0.9, 2)
    resting = await exchange.create_order("BTC/USDT", "limit", "buy", 0.001, limit_price,
                                          params={"clientOrderId": "ccxt-gtc-1"})
    assert resting["status"] == "open" and resting["remaining"] == 0.001
    opened = await exchange.fetch_open_orders("BTC/USDT")
    assert [o["clientOrderId"] for o in opened] == ["ccxt-gtc-1"]
    assert opened[0]["price"] == limit_price

    balance = await exchange.fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(10.01)
    assert balance["USDT"]["used"] > 0
    acct = venue.engine.account
    assert balance["USDT"]["total"] == pytest.approx(float(acct.get("USDT").free
                                                           + acct.get("USDT").locked))

    trades = await exchange.fetch_my_trades("BTC/USDT")
    assert trades and all(t["side"] == "buy" and t["takerOrMaker"] == "taker" for t in trades)
    assert sum(t["amount"] for t in trades) == pytest.approx(0.01)
    assert all(t["order"] == order["id"] for t in trades)
    assert trades[0]["fee"]["currency"] == "USDT"

    canceled = await exchange.cancel_order(resting["id"], "BTC/USDT")
    assert canceled["status"] == "canceled" and canceled["id"] == resting["id"]
    assert await exchange.fetch_open_orders("BTC/USDT") == []
    assert venue.engine.account.get("USDT").locked == 0


async def test_ccxt_maps_venue_errors(exchange: Any, running: Any) -> None:
    await exchange.load_markets()
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.fetch_order(None, "BTC/USDT", params={"clientOrderId": "missing"})
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.cancel_order("123", "BTC/USDT")
    with pytest.raises(ccxt.InsufficientFunds):
        await exchange.create_order("ETH/USDT", "market", "sell", 500)
    running.sim.venues["alpha"].faults.add("http_5xx", None, None)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_balance()


async def test_ccxt_pro_watch_order_book_follows_the_diff_stream(running: Any) -> None:
    import ccxt.pro as ccxtpro

    local = running.url("beta")
    urls: dict[str, Any] = {k: local + v for k, v in API_SECTIONS.items()}
    urls["ws"] = {"spot": running.ws("beta") + "/stream/ws"}
    ex = ccxtpro.binance({
        "enableRateLimit": False, "urls": {"api": urls},
        "options": {"fetchCurrencies": False, "fetchMargins": False,
                    "fetchMarkets": {"types": ["spot"]}},
    })
    try:
        nonces = []
        for _ in range(6):
            book = await asyncio.wait_for(ex.watch_order_book("ETH/USDT"), 5)
            nonces.append(book["nonce"])
            assert book["bids"][0][0] < book["asks"][0][0]
        assert nonces == sorted(nonces) and nonces[-1] > nonces[0]
        venue_book = running.sim.market.book("beta", "ETHUSDT")
        assert book["nonce"] <= venue_book.update_id
    finally:
        await ex.close()

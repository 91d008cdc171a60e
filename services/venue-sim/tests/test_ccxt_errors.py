"""Which ccxt exception each failure answer of the simulator becomes, with ccxt configured as
the executor configures it (arb_executor.venue_client.ccxt_config) and orders sent as the
executor sends them (``private_post_order``, MARKET, FULL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest

from arb_venue_sim.faults import REJECT_REASONS

SECTIONS = {
    "public": "/api/v3", "private": "/api/v3", "v1": "/api/v1",
    "sapi": "/sapi/v1", "sapiV2": "/sapi/v2", "sapiV3": "/sapi/v3", "sapiV4": "/sapi/v4",
    "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data", "dapiPublic": "/dapi/v1", "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2", "dapiData": "/futures/data", "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1", "papi": "/papi/v1", "papiV2": "/papi/v2",
}
# reject_orders reason -> the ccxt class ccxt 4.5 raises for the venue's answer
REASON_CLASS = {
    "fault": ccxt.InvalidOrder,  # -2010, code map
    "insufficient_balance": ccxt.InsufficientFunds,  # exact message
    "duplicate": ccxt.InvalidOrder,  # -2010, code map ("Duplicate order sent." in the text)
    "lot_size": ccxt.InvalidOrder,  # body contains LOT_SIZE
    "notional": ccxt.BadRequest,  # -1013, code map (no message rule for NOTIONAL)
    "price_filter": ccxt.InvalidOrder,  # body contains PRICE_FILTER
    "unknown_symbol": ccxt.BadSymbol,  # -1121
}


def make_exchange(running: Any, venue: str = "alpha", timeout_ms: int = 5000) -> Any:
    v = running.sim.venues[venue]
    base = running.url(venue)
    return ccxt.binance({
        "apiKey": v.creds.api_key, "secret": v.creds.api_secret, "timeout": timeout_ms,
        "enableRateLimit": False, "urls": {"api": {k: base + p for k, p in SECTIONS.items()}},
        "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False,
                    "fetchMarkets": {"types": ["spot"]}, "adjustForTimeDifference": False,
                    "createOrder": {"quoteOrderQty": False},
                    "fetchOpenOrders": {"warnWithoutSymbol": False}, "recvWindow": 5000},
    })


@pytest.fixture
async def exchange(running: Any) -> AsyncIterator[Any]:
    ex = make_exchange(running)
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


async def submit(ex: Any, quantity: str = "0.01", coid: str = "c1",
                 symbol: str = "BTCUSDT", side: str = "BUY") -> Any:
    return await ex.private_post_order({
        "symbol": symbol, "side": side, "type": "MARKET", "quantity": quantity,
        "newClientOrderId": coid, "newOrderRespType": "FULL"})


async def test_each_reject_reason_maps_to_its_ccxt_class(exchange: Any, running: Any) -> None:
    assert set(REASON_CLASS) == set(REJECT_REASONS)
    venue = running.sim.venues["alpha"]
    for reason, cls in REASON_CLASS.items():
        venue.faults.add("reject_orders", 1, None, reason)
        with pytest.raises(ccxt.BaseError) as info:
            await submit(exchange, coid=f"r-{reason}")
        assert type(info.value) is cls, (reason, type(info.value), str(info.value))
        assert REJECT_REASONS[reason][1] in str(info.value)
    assert venue.engine.trades == []


async def test_real_rejections_map_like_the_faults(exchange: Any, running: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        await submit(exchange, quantity="11", side="SELL", coid="big")
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        await submit(exchange, quantity="0.000015", coid="lot")
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        await submit(exchange, quantity="0.00002", coid="tiny")
    with pytest.raises(ccxt.BadSymbol, match="Invalid symbol"):
        await submit(exchange, symbol="DOGEUSDT", coid="doge")
    # unified create_order catches an unknown market before sending anything
    with pytest.raises(ccxt.BadSymbol):
        await exchange.create_order("DOGE/USDT", "market", "buy", 1)
    price = round((await exchange.fetch_order_book("BTC/USDT"))["bids"][0][0] * 0.9, 2)
    await exchange.create_order("BTC/USDT", "limit", "buy", 0.001, price,
                                params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent."):
        await submit(exchange, coid="dup")


async def test_rate_limit_and_ban_map_to_ddos_protection(exchange: Any, running: Any) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("rate_limit", None, 3)
    with pytest.raises(ccxt.DDoSProtection) as info:  # binance.handle_errors: 418/429
        await submit(exchange, coid="rl1")
    assert type(info.value) is ccxt.DDoSProtection and " 429 " in str(info.value)
    assert isinstance(info.value, ccxt.NetworkError)
    assert "-1003" in str(info.value)
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.fetch_balance()
    venue.faults.clear()
    venue.faults.add("ip_ban", None, 3)
    with pytest.raises(ccxt.DDoSProtection) as info:
        await exchange.fetch_order_book("BTC/USDT")
    assert " 418 " in str(info.value)
    venue.faults.clear()
    venue.faults.add("weight_limit", 1, None)
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.fetch_order_book("BTC/USDT")
    venue.faults.clear()
    assert venue.engine.records == []
    order = await submit(exchange, coid="rl1")  # nothing was executed: the id is free
    assert order["status"] == "FILLED"


async def test_5xx_maps_to_exchange_not_available(exchange: Any, running: Any) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("http_5xx", None, 0.3)
    with pytest.raises(ccxt.ExchangeNotAvailable) as info:
        await submit(exchange, coid="x5")
    assert type(info.value) is ccxt.ExchangeNotAvailable and "503" in str(info.value)
    assert venue.engine.records == []
    await asyncio.sleep(0.35)
    assert (await submit(exchange, coid="x5"))["status"] == "FILLED"


async def test_timeout_maps_to_request_timeout_and_the_order_filled(running: Any) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("order_latency_ms", 600, None)
    ex = make_exchange(running, timeout_ms=200)
    try:
        await ex.load_markets()
        with pytest.raises(ccxt.RequestTimeout):
            await submit(ex, coid="slow")
    finally:
        await ex.close()
    venue.faults.clear()
    ex = make_exchange(running)
    try:
        got = await ex.fetch_order(None, "BTC/USDT", params={"clientOrderId": "slow"})
        assert got["status"] == "closed" and got["filled"] == 0.01
    finally:
        await ex.close()
    assert len(venue.engine.records) == 1


async def test_lost_response_maps_to_network_error_and_the_order_filled(
        exchange: Any, running: Any) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("lose_order_responses", None, None)
    with pytest.raises(ccxt.NetworkError) as info:
        await submit(exchange, coid="lost")
    # aiohttp's ServerDisconnectedError: ccxt raises ExchangeNotAvailable (a NetworkError)
    assert type(info.value) is ccxt.ExchangeNotAvailable, type(info.value)
    venue.faults.clear()
    got = await exchange.fetch_order(None, "BTC/USDT", params={"clientOrderId": "lost"})
    assert got["status"] == "closed" and got["filled"] == 0.01


async def test_partial_fill_through_ccxt(exchange: Any, running: Any) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("partial_fill", 0.4, None)
    raw = await submit(exchange, coid="part")
    assert raw["status"] == "EXPIRED" and raw["executedQty"] == "0.00400000"
    assert sum(float(f["qty"]) for f in raw["fills"]) == pytest.approx(0.004)
    order = await exchange.create_order("BTC/USDT", "market", "buy", 0.01,
                                        params={"clientOrderId": "part2"})
    assert order["status"] == "expired"
    assert order["filled"] == pytest.approx(0.004) and order["remaining"] == pytest.approx(0.006)
    fetched = await exchange.fetch_order(None, "BTC/USDT", params={"clientOrderId": "part"})
    assert fetched["status"] == "expired" and fetched["filled"] == pytest.approx(0.004)
    trades = await exchange.fetch_my_trades("BTC/USDT", params={"orderId": raw["orderId"]})
    assert sum(t["amount"] for t in trades) == pytest.approx(0.004)

"""Executor failure paths, each set through the control API: partial fills, rejections (each
reason), rate limits / bans / request weight, 5xx bursts, latency and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from arb_common.clock import ManualClock
from arb_common.runtime import ServiceRuntime
from arb_venue_sim.config import SimSettings
from arb_venue_sim.control import register_control
from arb_venue_sim.faults import REJECT_REASONS
from arb_venue_sim.venue import Simulator, Venue

SignedCall = Callable[..., Awaitable[httpx.Response]]
D = Decimal
BTC_BUY = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}
RATE_MSG = ("Too much request weight used; current limit is 6000 request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.")


@pytest.fixture
async def control(sim: Simulator, settings: SimSettings) -> AsyncIterator[httpx.AsyncClient]:
    rt = ServiceRuntime("venue-sim", settings)
    register_control(rt.app, sim, rt.check_token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app),
                                 base_url="http://control") as c:
        yield c


async def fault(control: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    resp = await control.post("/control/venues/alpha/faults", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["fault"]


def balances(venue: Venue) -> dict[str, tuple[Decimal, Decimal]]:
    acct = venue.engine.account
    return {a: (acct.get(a).free, acct.get(a).locked) for a in ("BTC", "ETH", "SOL", "USDT")}


# ------------------------------------------------------------------ partial fills
async def test_partial_fill_expires_the_rest_and_everything_agrees(
        control: httpx.AsyncClient, call: SignedCall, alpha: Venue) -> None:
    assert (await fault(control, kind="partial_fill", value=0.3337))["value"] == 0.3337
    resp = await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.01",
                      newClientOrderId="pf1", newOrderRespType="FULL")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "EXPIRED"
    assert body["origQty"] == "0.01000000" and body["executedQty"] == "0.00333000"
    fills = body["fills"]
    assert fills and sum(D(f["qty"]) for f in fills) == D("0.00333")
    cost = sum(D(f["qty"]) * D(f["price"]) for f in fills)
    fees = sum(D(f["commission"]) for f in fills)
    assert D(body["cummulativeQuoteQty"]) == cost

    got = (await call("GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="pf1")).json()
    assert got["status"] == "EXPIRED" and got["executedQty"] == "0.00333000"
    assert got["cummulativeQuoteQty"] == body["cummulativeQuoteQty"]
    trades = (await call("GET", "/api/v3/myTrades", symbol="BTCUSDT",
                         orderId=body["orderId"])).json()
    assert [t["id"] for t in trades] == [f["tradeId"] for f in fills]
    assert sum(D(t["qty"]) for t in trades) == D("0.00333")
    assert balances(alpha)["BTC"] == (D("10.00333"), 0)
    assert balances(alpha)["USDT"] == (D(1_000_000) - cost - fees, 0)
    (rec,) = (await control.get("/control/venues/alpha/orders")).json()["orders"]
    assert rec["status"] == "EXPIRED" and rec["filled_quantity"] == "0.00333"
    assert rec["quantity"] == "0.01"
    assert (await call("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json() == []


async def test_partial_fill_default_half_sell_and_quote_orders(
        control: httpx.AsyncClient, call: SignedCall, alpha: Venue) -> None:
    await fault(control, kind="partial_fill")
    body = (await call("POST", "/api/v3/order", symbol="SOLUSDT", side="SELL", type="MARKET",
                       quantity="3.001")).json()
    assert body["status"] == "EXPIRED" and D(body["executedQty"]) == D("1.5")
    assert balances(alpha)["SOL"] == (D("4998.5"), 0)  # start 5000 SOL
    body = (await call("POST", "/api/v3/order", **BTC_BUY, quoteOrderQty="1000")).json()
    assert body["status"] == "EXPIRED"
    assert 0 < D(body["cummulativeQuoteQty"]) <= 500
    assert D(body["executedQty"]) % D("0.00001") == 0
    (await control.delete("/control/venues/alpha/faults")).raise_for_status()
    body = (await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.01")).json()
    assert body["status"] == "FILLED" and body["executedQty"] == "0.01000000"


async def test_partial_fill_validation_and_expiry(control: httpx.AsyncClient,
                                                  call: SignedCall) -> None:
    for value in (0, 1, 1.5, -0.2):
        resp = await control.post("/control/venues/alpha/faults",
                                  json={"kind": "partial_fill", "value": value})
        assert resp.status_code == 422 and "value" in resp.json()["detail"], value
    await fault(control, kind="partial_fill", value=0.5, duration_s=0.2)
    assert (await call("POST", "/api/v3/order", **BTC_BUY,
                       quantity="0.01")).json()["status"] == "EXPIRED"
    await asyncio.sleep(0.25)
    assert (await call("POST", "/api/v3/order", **BTC_BUY,
                       quantity="0.01")).json()["status"] == "FILLED"


async def test_market_order_short_of_real_liquidity_expires(call: SignedCall,
                                                            alpha: Venue) -> None:
    asks = alpha.market.book("alpha", "SOLUSDT").levels("asks")
    available = sum(q for _, q in asks)
    body = (await call("POST", "/api/v3/order", symbol="SOLUSDT", side="BUY", type="MARKET",
                       quantity=str(available + 100))).json()
    assert body["status"] == "EXPIRED"
    assert D(body["executedQty"]) == available < D(body["origQty"])
    assert sum(D(f["qty"]) for f in body["fills"]) == available


def test_capped_quantity_rounds_down_with_at_least_one_step() -> None:
    from arb_venue_sim.config import symbol_spec
    from arb_venue_sim.matching import OrderRequest, _capped

    spec = symbol_spec("BTC-USDT")  # step 0.00001

    def cap(qty: str, ratio: str) -> Decimal | None:
        req = OrderRequest("BTCUSDT", "BUY", "MARKET", quantity=D(qty), fill_ratio=D(ratio))
        out = _capped(spec, req)
        assert out is not None
        return out[0]

    assert cap("0.01", "0.3337") == D("0.00333")
    assert cap("0.00003", "0.1") == D("0.00001")  # at least one step
    assert cap("0.00003", "0.99") == D("0.00002")  # at most quantity - one step
    assert cap("0.00001", "0.5") == 0  # one step: nothing can be partial
    limit = OrderRequest("BTCUSDT", "BUY", "LIMIT", quantity=D("1"), price=D("1"),
                         fill_ratio=D("0.5"))
    assert _capped(spec, limit) is None  # MARKET orders only


# ------------------------------------------------------------------ rejections
@pytest.mark.parametrize("reason", sorted(REJECT_REASONS))
async def test_reject_orders_answers_each_reason(reason: str, control: httpx.AsyncClient,
                                                 call: SignedCall, alpha: Venue) -> None:
    before = balances(alpha)
    got = await fault(control, kind="reject_orders", value=1, reason=reason)
    assert got["reason"] == reason
    resp = await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.01",
                      newClientOrderId=f"rj-{reason}")
    code, msg = REJECT_REASONS[reason]
    assert resp.status_code == 400
    assert resp.json() == {"code": code, "msg": msg}
    (rec,) = (await control.get("/control/venues/alpha/orders")).json()["orders"]
    assert rec["status"] == "REJECTED" and rec["reject_reason"] == msg
    assert rec["client_order_id"] == f"rj-{reason}" and rec["venue_order_id"] is None
    assert balances(alpha) == before and alpha.engine.trades == []


async def test_reject_orders_default_reason_and_bad_reasons(control: httpx.AsyncClient,
                                                            call: SignedCall) -> None:
    got = await fault(control, kind="reject_orders")
    assert got["reason"] == "fault" and got["value"] is None
    body = (await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.01")).json()
    assert body == {"code": -2010, "msg": "Order rejected by the venue (simulated fault)."}
    resp = await control.post("/control/venues/alpha/faults",
                              json={"kind": "reject_orders", "reason": "meteor"})
    assert resp.status_code == 422 and "reason" in resp.json()["detail"]
    resp = await control.post("/control/venues/alpha/faults",
                              json={"kind": "http_5xx", "reason": "lot_size"})
    assert resp.status_code == 422 and "reason" in resp.json()["detail"]


async def test_real_duplicate_open_client_order_id_is_rejected(call: SignedCall,
                                                               alpha: Venue) -> None:
    bid = alpha.market.book("alpha", "BTCUSDT").levels("bids")[0][0]
    price = str((bid * D("0.9")).quantize(D("0.01")))
    limit = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.001", "price": price, "newClientOrderId": "dup1"}
    assert (await call("POST", "/api/v3/order", **limit)).json()["status"] == "NEW"
    resp = await call("POST", "/api/v3/order", **limit)
    assert resp.status_code == 400
    assert resp.json() == {"code": -2010, "msg": "Duplicate order sent."}
    resp = await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.001",
                      newClientOrderId="dup1")
    assert resp.json()["code"] == -2010  # any order reusing an open order's id
    assert len(alpha.engine.open_orders()) == 1
    # a filled order's id may be used again (Binance: unique among open orders)
    assert (await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.001",
                       newClientOrderId="once")).json()["status"] == "FILLED"
    assert (await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.001",
                       newClientOrderId="once")).json()["status"] == "FILLED"


# ------------------------------------------------------------------ rate limits
async def test_rate_limit_answers_429_with_retry_after_and_executes_nothing(
        control: httpx.AsyncClient, call: SignedCall, client: httpx.AsyncClient,
        alpha: Venue) -> None:
    before = balances(alpha)
    await fault(control, kind="rate_limit", duration_s=4.5)
    resp = await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.01")
    assert resp.status_code == 429
    assert resp.json() == {"code": -1003, "msg": RATE_MSG}
    assert resp.headers["retry-after"] == "5"
    assert resp.headers["content-type"].startswith("application/json")
    assert (await client.get("/api/v3/depth?symbol=BTCUSDT")).status_code == 429
    assert alpha.engine.records == [] and balances(alpha) == before
    await fault(control, kind="rate_limit")  # no duration: Retry-After 1
    assert (await client.get("/api/v3/time")).headers["retry-after"] == "1"
    await fault(control, kind="rate_limit", value=0)
    assert (await client.get("/api/v3/time")).status_code == 200
    await control.delete("/control/venues/alpha/faults")
    assert (await call("POST", "/api/v3/order", **BTC_BUY,
                       quantity="0.01")).status_code == 200


async def test_ip_ban_answers_418(control: httpx.AsyncClient, call: SignedCall,
                                  client: httpx.AsyncClient, alpha: Venue) -> None:
    await fault(control, kind="ip_ban", duration_s=30)
    resp = await call("POST", "/api/v3/order", **BTC_BUY, quantity="0.01")
    assert resp.status_code == 418 and resp.headers["retry-after"] == "30"
    body = resp.json()
    assert body["code"] == -1003
    assert body["msg"].startswith("Way too much request weight used; IP banned until ")
    assert body["msg"].endswith(". Please use WebSocket Streams for live updates to avoid bans.")
    assert alpha.engine.records == []
    await fault(control, kind="ip_ban")
    assert (await client.get("/api/v3/ping")).headers["retry-after"] == "120"


async def test_used_weight_headers_and_weight_limit(settings: SimSettings) -> None:
    clock = ManualClock()  # 40 s before the next minute
    sim = Simulator(settings, clock)
    alpha = sim.venues["alpha"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=alpha.asgi),
                                 base_url="http://alpha") as c:
        resp = await c.get("/api/v3/depth?symbol=BTCUSDT")
        assert resp.headers["x-mbx-used-weight-1m"] == "5"
        assert resp.headers["x-mbx-used-weight"] == "5"
        assert (await c.get("/api/v3/depth?symbol=BTCUSDT&limit=1000")).headers[
            "x-mbx-used-weight-1m"] == "55"
        assert (await c.get("/api/v3/exchangeInfo")).headers["x-mbx-used-weight-1m"] == "75"
        alpha.faults.add("weight_limit", 100, None)
        assert (await c.get("/api/v3/exchangeInfo")).status_code == 200  # 95
        resp = await c.get("/api/v3/ticker/bookTicker")  # 99
        assert resp.status_code == 200
        resp = await c.get("/api/v3/depth?symbol=BTCUSDT")  # 104 > 100
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "40"
        assert resp.headers["x-mbx-used-weight-1m"] == "104"
        assert resp.json() == {"code": -1003, "msg": RATE_MSG.replace("6000", "100")}
        clock.advance(40)  # a new minute: the counter restarts
        resp = await c.get("/api/v3/depth?symbol=BTCUSDT")
        assert resp.status_code == 200 and resp.headers["x-mbx-used-weight-1m"] == "5"
    with pytest.raises(ValueError):
        alpha.faults.add("weight_limit", None, None)


# ------------------------------------------------------------------ 5xx bursts, latency
async def test_http_5xx_burst_with_duration_ends_by_itself(
        control: httpx.AsyncClient, call: SignedCall, client: httpx.AsyncClient,
        alpha: Venue) -> None:
    got = await fault(control, kind="http_5xx", duration_s=0.3)
    assert got["duration_s"] == 0.3 and 0 < got["remaining_s"] <= 0.3
    for _ in range(3):
        assert (await call("POST", "/api/v3/order", **BTC_BUY,
                           quantity="0.01")).status_code == 503
    assert alpha.engine.records == []
    await asyncio.sleep(0.35)
    assert (await control.get("/control/venues/alpha/faults")).json()["faults"] == []
    assert (await client.get("/api/v3/depth?symbol=BTCUSDT")).status_code == 200
    assert (await call("POST", "/api/v3/order", **BTC_BUY,
                       quantity="0.01")).json()["status"] == "FILLED"


async def test_http_5xx_with_probability_hits_some_calls(control: httpx.AsyncClient,
                                                         client: httpx.AsyncClient) -> None:
    await fault(control, kind="http_5xx", value=0.5)
    codes = [(await client.get("/api/v3/time")).status_code for _ in range(60)]
    assert 10 < codes.count(503) < 50 and codes.count(200) == 60 - codes.count(503)


async def test_timeout_of_a_slow_answer_leaves_a_filled_order(
        running: Any, signer: Callable[..., str]) -> None:
    venue = running.sim.venues["alpha"]
    venue.faults.add("order_latency_ms", 400, None)
    headers = {"X-MBX-APIKEY": venue.creds.api_key,
               "content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=running.url("alpha"), timeout=0.15) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/api/v3/order", headers=headers, content=signer(
                venue, {**BTC_BUY, "quantity": "0.01", "newClientOrderId": "slow1"}))
        got = await http.get("/api/v3/order?" + signer(
            venue, {"symbol": "BTCUSDT", "origClientOrderId": "slow1"}), headers=headers)
    assert got.status_code == 200 and got.json()["status"] == "FILLED"
    assert [o.client_order_id for o in venue.engine.records] == ["slow1"]

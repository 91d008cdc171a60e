"""Control API on the control port (ServiceRuntime app + /control routes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from arb_common.runtime import ServiceRuntime
from arb_venue_sim.config import SimSettings
from arb_venue_sim.control import register_control
from arb_venue_sim.venue import Simulator


@pytest.fixture
async def control(sim: Simulator, settings: SimSettings) -> AsyncIterator[httpx.AsyncClient]:
    rt = ServiceRuntime("venue-sim", settings)
    register_control(rt.app, sim, rt.check_token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app),
                                 base_url="http://control") as c:
        yield c


async def test_venues_listing_matches_the_contract(control: httpx.AsyncClient,
                                                   sim: Simulator) -> None:
    body = (await control.get("/control/venues")).json()
    alpha, beta = body["venues"]
    assert set(alpha) == {"id", "dialect", "rest_url", "ws_url", "api_key", "api_secret",
                          "taker_fee", "maker_fee", "symbols"}
    assert alpha["id"] == "alpha" and alpha["dialect"] == "binance"
    assert alpha["rest_url"] == "http://127.0.0.1:8091"
    assert alpha["ws_url"] == "ws://127.0.0.1:8091/stream"
    assert beta["rest_url"] == "http://127.0.0.1:8092"
    assert alpha["symbols"] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    assert alpha["taker_fee"] == "0.001"
    assert alpha["api_key"] == sim.venues["alpha"].creds.api_key != beta["api_key"]
    assert len(alpha["api_secret"]) == 64


async def test_external_order_then_orders_and_balances(control: httpx.AsyncClient) -> None:
    resp = await control.post("/control/venues/beta/orders",
                              json={"symbol": "BTC-USDT", "side": "buy", "quantity": "0.01"})
    assert resp.status_code == 200, resp.text
    order = resp.json()
    assert order["status"] == "FILLED" and order["external"] is True
    orders = (await control.get("/control/venues/beta/orders")).json()["orders"]
    (rec,) = orders
    assert {"client_order_id", "venue_order_id", "symbol", "side", "quantity", "status",
            "fills"} <= set(rec)
    assert rec["symbol"] == "BTC-USDT" and rec["side"] == "buy" and rec["quantity"] == "0.01"
    assert isinstance(rec["venue_order_id"], str)
    fill_qty = sum(Decimal(f["quantity"]) for f in rec["fills"])
    assert fill_qty == Decimal("0.01")
    for f in rec["fills"]:
        assert set(f) >= {"trade_id", "quantity", "price", "fee", "fee_asset"}
        assert f["fee_asset"] == "USDT"
    cost = sum(Decimal(f["quantity"]) * Decimal(f["price"]) for f in rec["fills"])
    fees = sum(Decimal(f["fee"]) for f in rec["fills"])
    bals = (await control.get("/control/venues/beta/balances")).json()["balances"]
    assert Decimal(bals["BTC"]["free"]) == Decimal("10.01")
    assert Decimal(bals["USDT"]["free"]) == Decimal(1_000_000) - cost - fees
    untouched = (await control.get("/control/venues/alpha/balances")).json()["balances"]
    assert untouched["BTC"]["free"] == "10"
    assert (await control.get("/control/venues/alpha/orders")).json()["orders"] == []


async def test_bad_requests_name_the_field(control: httpx.AsyncClient) -> None:
    resp = await control.post("/control/venues/alpha/orders",
                              json={"symbol": "BTC-USDT", "side": "hold", "quantity": "1"})
    assert resp.status_code == 422 and "side" in resp.json()["detail"]
    resp = await control.post("/control/venues/alpha/orders",
                              json={"symbol": "DOGE-USDT", "side": "buy", "quantity": "1"})
    assert resp.status_code == 422 and "symbol" in resp.json()["detail"]
    resp = await control.post("/control/venues/alpha/orders",
                              json={"symbol": "BTC-USDT", "side": "buy", "quantity": "x"})
    assert resp.status_code == 422 and "quantity" in resp.json()["detail"]
    resp = await control.post("/control/venues/alpha/faults", json={"kind": "meteor"})
    assert resp.status_code == 422 and "kind" in resp.json()["detail"]
    resp = await control.post("/control/venues/alpha/faults",
                              json={"kind": "order_latency_ms"})
    assert resp.status_code == 422 and "value" in resp.json()["detail"]
    resp = await control.get("/control/venues/gamma/orders")
    assert resp.status_code == 404
    resp = await control.post("/control/venues/gamma/faults", json={"kind": "http_5xx"})
    assert resp.status_code == 404


async def test_external_order_without_funds_is_400_and_recorded(
        control: httpx.AsyncClient) -> None:
    resp = await control.post("/control/venues/alpha/orders",
                              json={"symbol": "BTC-USDT", "side": "sell", "quantity": "50"})
    assert resp.status_code == 400
    assert resp.json()["code"] == -2010
    orders = (await control.get("/control/venues/alpha/orders")).json()["orders"]
    assert orders[-1]["status"] == "REJECTED" and orders[-1]["venue_order_id"] is None


async def test_fault_lifecycle(control: httpx.AsyncClient, sim: Simulator) -> None:
    resp = await control.post("/control/venues/alpha/faults",
                              json={"kind": "http_5xx", "value": 1, "duration_s": 30})
    assert resp.status_code == 200
    assert resp.json()["fault"]["kind"] == "http_5xx"
    await control.post("/control/venues/alpha/faults",
                       json={"kind": "order_latency_ms", "value": 250})
    listed = (await control.get("/control/venues/alpha/faults")).json()["faults"]
    assert {f["kind"] for f in listed} == {"http_5xx", "order_latency_ms"}
    assert sim.venues["alpha"].faults.get("http_5xx") is not None
    assert sim.venues["beta"].faults.active() == []
    resp = await control.delete("/control/venues/alpha/faults")
    assert resp.status_code == 200
    assert sim.venues["alpha"].faults.active() == []


async def test_changes_need_the_token_outside_dev() -> None:
    settings = SimSettings(profile="staging", control_token="s3cret", sim_seed=1)
    sim = Simulator(settings)
    rt = ServiceRuntime("venue-sim", settings)
    register_control(rt.app, sim, rt.check_token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app),
                                 base_url="http://control") as c:
        body = {"kind": "http_5xx"}
        assert (await c.post("/control/venues/alpha/faults", json=body)).status_code == 401
        ok = await c.post("/control/venues/alpha/faults", json=body,
                          headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await c.delete("/control/venues/alpha/faults")).status_code == 401
        assert (await c.get("/control/venues")).status_code == 200

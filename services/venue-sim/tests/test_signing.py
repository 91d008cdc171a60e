"""HMAC signature, API key and timestamp checks of signed Binance requests."""

from __future__ import annotations

import time

import httpx
import pytest

from arb_common.clock import SYSTEM_CLOCK
from arb_venue_sim.config import Credentials
from arb_venue_sim.orders import BinanceError
from arb_venue_sim.signing import parse_params, sign, verify
from arb_venue_sim.venue import Venue

DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_PAYLOAD = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
               "&recvWindow=5000&timestamp=1499827319559")
DOC_SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ns(self) -> int:
        return self.ms * 1_000_000

    def now_ms(self) -> int:
        return self.ms

    def monotonic_ns(self) -> int:
        return self.ms * 1_000_000


DOC_CREDS = Credentials(api_key=DOC_KEY, api_secret=DOC_SECRET)
DOC_CLOCK = FixedClock(1499827319559 + 100)


def test_doc_example_signature_is_reproduced() -> None:
    assert sign(DOC_SECRET, DOC_PAYLOAD) == DOC_SIG


def test_doc_example_accepted_in_query_and_in_body() -> None:
    query = DOC_PAYLOAD + "&signature=" + DOC_SIG
    verify(DOC_CREDS, DOC_KEY, query, "", parse_params(query, ""), DOC_CLOCK)
    verify(DOC_CREDS, DOC_KEY, "", query, parse_params("", query), DOC_CLOCK)


def test_mixed_query_and_body_signs_the_concatenation_without_separator() -> None:
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
    body = ("quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature="
            "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77")
    verify(DOC_CREDS, DOC_KEY, query, body, parse_params(query, body), DOC_CLOCK)


def test_upper_case_signature_is_accepted() -> None:
    query = DOC_PAYLOAD + "&signature=" + DOC_SIG.upper()
    verify(DOC_CREDS, DOC_KEY, query, "", parse_params(query, ""), DOC_CLOCK)


@pytest.mark.parametrize(
    ("query", "key", "code"),
    [
        (DOC_PAYLOAD + "&signature=" + "0" * 64, DOC_KEY, -1022),
        (DOC_PAYLOAD.replace("quantity=1", "quantity=2") + "&signature=" + DOC_SIG, DOC_KEY,
         -1022),
        (DOC_PAYLOAD + "&signature=" + DOC_SIG, "wrongkey", -2015),
        (DOC_PAYLOAD + "&signature=" + DOC_SIG, None, -2014),
        (DOC_PAYLOAD, DOC_KEY, -1102),
    ],
)
def test_bad_requests_are_rejected_with_binance_codes(query: str, key: str | None,
                                                       code: int) -> None:
    with pytest.raises(BinanceError) as err:
        verify(DOC_CREDS, key, query, "", parse_params(query, ""), DOC_CLOCK)
    assert err.value.code == code


def test_timestamp_outside_recv_window_is_rejected() -> None:
    query = DOC_PAYLOAD + "&signature=" + DOC_SIG
    with pytest.raises(BinanceError) as err:
        verify(DOC_CREDS, DOC_KEY, query, "", parse_params(query, ""),
               FixedClock(1499827319559 + 6000))
    assert err.value.code == -1021
    assert err.value.msg == "Timestamp for this request is outside of the recvWindow."
    with pytest.raises(BinanceError) as err:
        verify(DOC_CREDS, DOC_KEY, query, "", parse_params(query, ""),
               FixedClock(1499827319559 - 2000))
    assert err.value.code == -1021


async def test_http_signature_failure_answers_400_json(client: httpx.AsyncClient,
                                                       alpha: Venue) -> None:
    qs = f"symbol=BTCUSDT&timestamp={int(time.time() * 1000)}&signature={'ab' * 32}"
    resp = await client.get(f"/api/v3/openOrders?{qs}",
                            headers={"X-MBX-APIKEY": alpha.creds.api_key})
    assert resp.status_code == 400
    assert resp.content == b'{"code":-1022,"msg":"Signature for this request is not valid."}'


async def test_http_unknown_api_key_answers_401(client: httpx.AsyncClient) -> None:
    payload = f"timestamp={int(time.time() * 1000)}"
    resp = await client.get(f"/api/v3/account?{payload}&signature={sign('x', payload)}",
                            headers={"X-MBX-APIKEY": "nope"})
    assert resp.status_code == 401
    assert resp.json() == {"code": -2015,
                           "msg": "Invalid API-key, IP, or permissions for action."}


async def test_http_signed_post_body_is_accepted(client: httpx.AsyncClient,
                                                 alpha: Venue) -> None:
    payload = f"timestamp={int(time.time() * 1000)}&recvWindow=10000"
    resp = await client.get(
        f"/api/v3/account?{payload}&signature={sign(alpha.creds.api_secret, payload)}",
        headers={"X-MBX-APIKEY": alpha.creds.api_key})
    assert resp.status_code == 200, resp.text
    assert SYSTEM_CLOCK.now_ms() >= resp.json()["updateTime"]

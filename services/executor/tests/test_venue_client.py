"""ccxt configuration and error classification (no network)."""

from __future__ import annotations

from decimal import Decimal as D

import ccxt.async_support as ccxt
import pytest

from arb_common.errors import RateLimited, UnknownOutcome
from arb_common.venues import VenueConfig
from arb_executor.venue_client import (
    DuplicateOrder,
    OrderRejected,
    ccxt_config,
    classify,
    parse_order,
    parse_rules,
)

VENUE = VenueConfig(id="alpha", dialect="binance", rest_url="http://127.0.0.1:8091",
                    ws_url="ws://127.0.0.1:8091/stream", api_key="k", api_secret="s")


async def test_every_rest_section_points_at_the_venue() -> None:
    ex = ccxt.binance(ccxt_config(VENUE))
    try:
        api = ex.urls["api"]
        rest = {k: v for k, v in api.items() if isinstance(v, str)}
        assert len(rest) >= 22
        assert all(v.startswith("http://127.0.0.1:8091/") for v in rest.values()), rest
        assert ex.options["fetchCurrencies"] is False
        assert ex.options["fetchMarkets"]["types"] == ["spot"]
        assert ex.options["createOrder"]["quoteOrderQty"] is False
        assert ex.options["fetchOpenOrders"]["warnWithoutSymbol"] is False
        assert ex.timeout == 5000
    finally:
        await ex.close()


@pytest.mark.parametrize("exc", [
    ccxt.RequestTimeout("timeout"), ccxt.ExchangeNotAvailable("503"), ccxt.NetworkError("x"),
    ccxt.OperationFailed('{"code":-1001,"msg":"Internal error"}'),
    ccxt.ExchangeError("something odd"), ConnectionResetError("reset"),
])
def test_transport_and_server_failures_are_unknown_outcomes(exc: Exception) -> None:
    assert isinstance(classify(exc), UnknownOutcome)


@pytest.mark.parametrize("exc", [ccxt.DDoSProtection("429"), ccxt.RateLimitExceeded("429")])
def test_rate_limit_answers_are_retryable_and_not_unknown(exc: Exception) -> None:
    err = classify(exc)  # Binance does not act on a request it answers 429 / 418
    assert isinstance(err, RateLimited) and not isinstance(err, UnknownOutcome)


@pytest.mark.parametrize("exc", [
    ccxt.InsufficientFunds("Account has insufficient balance for requested action."),
    ccxt.InvalidOrder("Filter failure: LOT_SIZE"), ccxt.BadRequest("Invalid quantity."),
    ccxt.AuthenticationError("-2015"),
])
def test_sure_refusals_are_rejections_with_the_reason(exc: Exception) -> None:
    err = classify(exc)
    assert isinstance(err, OrderRejected)
    assert str(exc)[:10] in err.reason


def test_duplicate_client_order_id_means_query_it() -> None:
    assert isinstance(classify(ccxt.InvalidOrder('{"code":-2010,"msg":"Duplicate order sent."}')),
                      DuplicateOrder)


def test_parse_full_market_order_response() -> None:
    body = {"symbol": "BTCUSDT", "orderId": 1, "clientOrderId": "abc",
            "transactTime": 1700000000000,
            "price": "0.00000000", "origQty": "0.00200", "executedQty": "0.00100",
            "cummulativeQuoteQty": "50.00100", "status": "EXPIRED", "type": "MARKET",
            "side": "BUY", "fills": [{"price": "50001.00", "qty": "0.00100",
                                      "commission": "0.05000", "commissionAsset": "USDT",
                                      "tradeId": 9}]}
    ccxt_order = {"id": "1", "clientOrderId": "abc", "status": "expired", "info": body,
                  "timestamp": 1700000000000, "side": "buy"}
    o = parse_order(ccxt_order, "BTC-USDT")
    assert o.status == "EXPIRED"
    assert o.filled == D("0.001") and o.quantity == D("0.002")
    assert o.avg_price == D("50001")
    assert o.fills[0].trade_id == "9" and o.fills[0].fee == D("0.05")
    assert o.fills[0].fee_asset == "USDT"


def test_malformed_success_body_is_an_unknown_outcome() -> None:
    with pytest.raises(UnknownOutcome):
        parse_order({"id": None, "info": {}}, "BTC-USDT")


def test_rules_from_exchange_info_filters() -> None:
    market = {"base": "BTC", "quote": "USDT", "info": {"filters": [
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "stepSize": "0.00001"},
        {"filterType": "NOTIONAL", "minNotional": "5.00"}]}}
    r = parse_rules("BTC-USDT", market)
    assert (r.lot_step, r.min_qty, r.min_notional) == (D("0.00001"), D("0.00001"), D("5"))

"""Binance spot REST dialect of one simulated venue (``/api/v3/...``).

Formats follow /work/shared/protocols/binance-spot.md. Errors answer
``{"code": <negative>, "msg": "..."}`` with HTTP 400 (401 for API-key errors).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from arb_common.runtime import OrjsonResponse

from . import binance_params as bp
from .config import SymbolSpec
from .faults import ASGIApp, Receive, Scope, Send
from .metrics import REJECTS
from .orders import BinanceError, w8
from .signing import parse_params, verify

if TYPE_CHECKING:
    from .venue import Venue

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Response]])

RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": 10},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


def symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    """One ``exchangeInfo.symbols[]`` entry."""
    return {
        "symbol": spec.wire, "status": "TRADING", "baseAsset": spec.base,
        "baseAssetPrecision": 8, "quoteAsset": spec.quote, "quotePrecision": 8,
        "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": False,
        "ocoAllowed": False, "otoAllowed": False, "opoAllowed": False,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False,
        "cancelReplaceAllowed": False, "amendAllowed": False, "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": w8(spec.tick_size),
             "maxPrice": "10000000.00000000", "tickSize": w8(spec.tick_size)},
            {"filterType": "LOT_SIZE", "minQty": w8(spec.min_qty), "maxQty": w8(spec.max_qty),
             "stepSize": w8(spec.step_size)},
            {"filterType": "MIN_NOTIONAL", "minNotional": w8(spec.min_notional),
             "applyToMarket": True, "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": w8(spec.min_notional),
             "applyMinToMarket": True, "maxNotional": w8(spec.max_notional),
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": ["NONE"],
    }


def _symbols_list(raw: str) -> list[str]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise bp.illegal("symbols", '["SYMBOL1","SYMBOL2"]') from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bp.illegal("symbols", '["SYMBOL1","SYMBOL2"]')
    return value


def _selected_specs(venue: Venue, params: dict[str, str]) -> list[SymbolSpec] | None:
    """``symbol`` / ``symbols`` selection; None when neither is given."""
    specs = venue.market.by_wire
    if params.get("symbol") and params.get("symbols"):
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    if params.get("symbol"):
        spec = bp.symbol_param(params, specs)
        return [spec] if spec else []
    if params.get("symbols"):
        out = []
        for name in _symbols_list(params["symbols"]):
            if name not in specs:
                raise BinanceError(-1121, "Invalid symbol.", reason="bad_symbol")
            out.append(specs[name])
        return out
    return None


class RestRoutes:
    """The venue's REST endpoints as a plain ``(method, path)`` table, in front of the
    FastAPI app (which keeps the WebSockets and answers everything else, e.g. 404).

    Not FastAPI routes: its routing, dependency solving and middleware layers cost ~0.3 ms
    per request, more than the matching engine, and an order's round trip is the executor's
    hot path. A :class:`BinanceError` is answered with its ``{"code", "msg"}`` body and
    status; anything else with Binance's -1000 and HTTP 500 (logged)."""

    def __init__(self, venue_id: str, fallback: ASGIApp) -> None:
        self.venue_id = venue_id
        self.fallback = fallback
        self.table: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {}

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            self.table[(method, path)] = handler
            return handler
        return add

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (self.table.get((scope["method"], scope["path"]))
                   if scope["type"] == "http" else None)
        if handler is None:
            await self.fallback(scope, receive, send)
            return
        try:
            response = await handler(Request(scope, receive))
        except BinanceError as exc:
            if not exc.counted:
                REJECTS.labels(self.venue_id, exc.reason).inc()
            response = OrjsonResponse(exc.body(), status_code=exc.status)
        except Exception:  # noqa: BLE001 - answered like Binance does; the venue keeps running
            logger.exception("request failed venue=%s %s %s", self.venue_id,
                             scope["method"], scope["path"])
            REJECTS.labels(self.venue_id, "internal_error").inc()
            response = OrjsonResponse(
                {"code": -1000, "msg": "An unknown error occurred while processing the "
                 "request."}, status_code=500)
        await response(scope, receive, send)


def register_rest(routes: RestRoutes, venue: Venue) -> None:  # noqa: C901 - one route table
    engine = venue.engine
    specs = venue.market.by_wire

    async def public(request: Request) -> dict[str, str]:
        return parse_params(request.url.query, "")

    async def signed(request: Request) -> dict[str, str]:
        query = request.scope.get("query_string", b"").decode("latin-1")
        body = (await request.body()).decode("utf-8", "replace")
        params = parse_params(query, body)
        verify(venue.creds, request.headers.get("x-mbx-apikey"), query, body, params,
               venue.clock)
        return params

    @routes.route("GET", "/api/v3/ping")
    async def ping(request: Request) -> Response:
        return OrjsonResponse({})

    @routes.route("GET", "/api/v3/time")
    async def server_time(request: Request) -> Response:
        return OrjsonResponse({"serverTime": venue.clock.now_ms()})

    @routes.route("GET", "/api/v3/exchangeInfo")
    async def exchange_info(request: Request) -> Response:
        chosen = _selected_specs(venue, await public(request))
        listed = chosen if chosen is not None else list(specs.values())
        return OrjsonResponse({
            "timezone": "UTC", "serverTime": venue.clock.now_ms(), "rateLimits": RATE_LIMITS,
            "exchangeFilters": [], "symbols": [symbol_info(s) for s in listed]})

    @routes.route("GET", "/api/v3/depth")
    async def depth(request: Request) -> Response:
        params = await public(request)
        spec = bp.symbol_param(params, specs)
        assert spec is not None
        limit = min(bp.int_param(params, "limit", 1, 2**31) or 100, 5000)
        book = venue.market.book(venue.id, spec.wire)
        return OrjsonResponse({
            "lastUpdateId": book.update_id,
            "bids": [[w8(p), w8(q)] for p, q in book.levels("bids", limit)],
            "asks": [[w8(p), w8(q)] for p, q in book.levels("asks", limit)]})

    def book_ticker(spec: SymbolSpec) -> dict[str, Any]:
        book = venue.market.book(venue.id, spec.wire)
        bid, ask = book.best("bids"), book.best("asks")
        return {"symbol": spec.wire,
                "bidPrice": w8(bid[0]) if bid else w8(0 * spec.tick_size),
                "bidQty": w8(bid[1]) if bid else w8(0 * spec.tick_size),
                "askPrice": w8(ask[0]) if ask else w8(0 * spec.tick_size),
                "askQty": w8(ask[1]) if ask else w8(0 * spec.tick_size)}

    @routes.route("GET", "/api/v3/ticker/bookTicker")
    async def ticker_book(request: Request) -> Response:
        params = await public(request)
        chosen = _selected_specs(venue, params)
        if params.get("symbol") and chosen:
            return OrjsonResponse(book_ticker(chosen[0]))
        listed = chosen if chosen is not None else list(specs.values())
        return OrjsonResponse([book_ticker(s) for s in listed])

    @routes.route("POST", "/api/v3/order")
    async def new_order(request: Request) -> Response:
        params = await signed(request)
        req, resp_type = bp.order_request(params, specs)
        reject = venue.faults.get("reject_orders")
        if reject is not None and venue.faults.fires("reject_orders"):
            exc = reject.reject_error()
            engine.record_reject(req, exc)
            raise exc
        req.fill_ratio = venue.faults.partial_fill_ratio()
        order = engine.place(req)
        return OrjsonResponse(order.placement_json(resp_type))

    @routes.route("POST", "/api/v3/order/test")
    async def test_order(request: Request) -> Response:
        params = await signed(request)
        bp.order_request(params, specs)
        return OrjsonResponse({})

    @routes.route("GET", "/api/v3/order")
    async def query_order(request: Request) -> Response:
        params = await signed(request)
        spec = bp.symbol_param(params, specs)
        assert spec is not None
        order = engine.find(spec.wire, *bp.order_ref(params))
        if order is None:
            raise BinanceError(-2013, "Order does not exist.", reason="no_such_order")
        return OrjsonResponse(order.query_json())

    @routes.route("DELETE", "/api/v3/order")
    async def cancel_order(request: Request) -> Response:
        params = await signed(request)
        spec = bp.symbol_param(params, specs)
        assert spec is not None
        order = engine.find(spec.wire, *bp.order_ref(params))
        if order is None:
            raise BinanceError(-2011, "Unknown order sent.", reason="cancel_unknown")
        engine.cancel(order)
        cancel_id = params.get("newClientOrderId") or f"cancel{order.order_id}"
        return OrjsonResponse(order.cancel_json(cancel_id))

    @routes.route("GET", "/api/v3/openOrders")
    async def open_orders(request: Request) -> Response:
        params = await signed(request)
        spec = bp.symbol_param(params, specs, required=False)
        orders = engine.open_orders(spec.wire if spec else None)
        return OrjsonResponse([o.query_json() for o in orders])

    @routes.route("DELETE", "/api/v3/openOrders")
    async def cancel_all(request: Request) -> Response:
        params = await signed(request)
        spec = bp.symbol_param(params, specs)
        assert spec is not None
        out = []
        for order in engine.open_orders(spec.wire):
            engine.cancel(order)
            out.append(order.cancel_json(f"cancel{order.order_id}"))
        return OrjsonResponse(out)

    @routes.route("GET", "/api/v3/account")
    async def account(request: Request) -> Response:
        params = await signed(request)
        omit = params.get("omitZeroBalances", "false").lower() == "true"
        return OrjsonResponse(account_json(venue, omit))

    @routes.route("GET", "/api/v3/myTrades")
    async def my_trades(request: Request) -> Response:
        params = await signed(request)
        return OrjsonResponse(my_trades_json(venue, params))


def account_json(venue: Venue, omit_zero: bool) -> dict[str, Any]:
    taker, maker = venue.engine.taker_fee, venue.engine.maker_fee
    return {
        "makerCommission": int(maker * 10_000), "takerCommission": int(taker * 10_000),
        "buyerCommission": 0, "sellerCommission": 0,
        "commissionRates": {"maker": w8(maker), "taker": w8(taker), "buyer": w8(0 * maker),
                            "seller": w8(0 * maker)},
        "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False,
        "updateTime": venue.engine.account.update_time, "accountType": "SPOT",
        "balances": venue.engine.account.binance_json(omit_zero), "permissions": ["SPOT"],
        "uid": 100000000 + venue.index,
    }


def my_trades_json(venue: Venue, params: dict[str, str]) -> list[dict[str, Any]]:
    spec = bp.symbol_param(params, venue.market.by_wire)
    assert spec is not None
    order_id = bp.int_param(params, "orderId")
    start = bp.int_param(params, "startTime")
    end = bp.int_param(params, "endTime")
    from_id = bp.int_param(params, "fromId")
    limit = bp.int_param(params, "limit", 1, 1000) or 500
    if start is not None and end is not None and end - start > 24 * 3600 * 1000:
        raise BinanceError(-1127, "More than 24 hours between startTime and endTime.")
    trades = [t for t in venue.engine.trades if t.symbol == spec.wire
              and (order_id is None or t.order_id == order_id)
              and (from_id is None or t.trade_id >= from_id)
              and (start is None or t.time >= start) and (end is None or t.time <= end)]
    if from_id is None and start is None and end is None:
        trades = trades[-limit:]  # most recent
    else:
        trades = trades[:limit]
    return [t.my_trade_json() for t in trades]

"""Parsing and validation of Binance REST parameters into engine requests."""

from __future__ import annotations

import re
from decimal import Decimal

from .config import SymbolSpec
from .matching import OrderRequest
from .orders import BinanceError
from .signing import mandatory

DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
CLIENT_ID_RE = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET")
TIME_IN_FORCE = ("GTC", "IOC", "FOK")
RESP_TYPES = ("ACK", "RESULT", "FULL")


def illegal(name: str, legal: str) -> BinanceError:
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
                               f"is '{legal}'.", reason="illegal_param")


def decimal_param(params: dict[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not DECIMAL_RE.match(raw):
        raise illegal(name, DECIMAL_RE.pattern)
    return Decimal(raw)


def int_param(params: dict[str, str], name: str, lo: int = 0, hi: int = 2**63 - 1) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise illegal(name, f"{lo}-{hi}" if hi < 2**63 - 1 else "^[0-9]{1,20}$")
    return int(raw)


def symbol_param(params: dict[str, str], specs: dict[str, SymbolSpec],
                 required: bool = True) -> SymbolSpec | None:
    raw = mandatory(params, "symbol") if required else params.get("symbol")
    if raw is None:
        return None
    spec = specs.get(raw)
    if spec is None:
        raise BinanceError(-1121, "Invalid symbol.", reason="bad_symbol")
    return spec


def both_empty(a: str, b: str) -> BinanceError:
    return BinanceError(-1102, f"Param '{a}' or '{b}' must be sent, but both were empty/null!",
                        reason="mandatory_param")


def not_required(name: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{name}' sent when not required.",
                        reason="param_not_required")


def order_request(params: dict[str, str], specs: dict[str, SymbolSpec]) -> tuple[OrderRequest, str]:
    """``POST /api/v3/order`` parameters → (request, newOrderRespType)."""
    spec = symbol_param(params, specs)
    assert spec is not None
    side = mandatory(params, "side")
    if side not in ("BUY", "SELL"):
        raise BinanceError(-1117, "Invalid side.", reason="bad_side")
    otype = mandatory(params, "type")
    if otype not in ORDER_TYPES:
        raise BinanceError(-1116, "Invalid orderType.", reason="bad_type")
    quantity = decimal_param(params, "quantity")
    quote_qty = decimal_param(params, "quoteOrderQty")
    price = decimal_param(params, "price")
    tif = "GTC"
    if otype == "LIMIT":
        tif = mandatory(params, "timeInForce")
        if tif not in TIME_IN_FORCE:
            raise BinanceError(-1115, "Invalid timeInForce.", reason="bad_tif")
    if otype in ("LIMIT", "LIMIT_MAKER"):
        mandatory(params, "quantity")
        mandatory(params, "price")
        if quote_qty is not None:
            raise not_required("quoteOrderQty")
    else:
        if quantity is None and quote_qty is None:
            raise both_empty("quantity", "quoteOrderQty")
        if quantity is not None and quote_qty is not None:
            raise not_required("quoteOrderQty")
        if price is not None:
            raise not_required("price")
    client_id = params.get("newClientOrderId") or None
    if client_id is not None and not CLIENT_ID_RE.match(client_id):
        raise illegal("newClientOrderId", CLIENT_ID_RE.pattern)
    default_resp = "FULL" if otype in ("MARKET", "LIMIT") else "ACK"
    resp_type = params.get("newOrderRespType") or default_resp
    if resp_type not in RESP_TYPES:
        raise illegal("newOrderRespType", "ACK, RESULT, FULL")
    req = OrderRequest(symbol=spec.wire, side=side, type=otype, time_in_force=tif,
                       quantity=quantity, quote_qty=quote_qty, price=price,
                       client_order_id=client_id)
    return req, resp_type


def order_ref(params: dict[str, str]) -> tuple[int | None, str | None]:
    order_id = int_param(params, "orderId")
    client_id = params.get("origClientOrderId") or None
    if order_id is None and client_id is None:
        raise both_empty("origClientOrderId", "orderId")
    return order_id, client_id

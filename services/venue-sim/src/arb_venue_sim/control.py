"""Control API of the simulator (on the control port, beside /healthz /readyz /metrics /info).

See ARCHITECTURE.md "Contract for operators and scripts" and docs/CONTRACTS.md.
Endpoints that change something need the control token outside profile dev.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, field_validator

from arb_common.runtime import OrjsonResponse

from .faults import KINDS
from .matching import OrderRequest
from .orders import BinanceError
from .venue import Simulator, Venue

logger = logging.getLogger(__name__)


class FaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    value: float | None = None
    duration_s: float | None = None
    reason: str | None = None  # reject_orders only (faults.REJECT_REASONS)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"must be one of {', '.join(KINDS)}")
        return v


class ExternalOrderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    side: str
    quantity: str

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z0-9]+-[A-Z0-9]+", v):
            raise ValueError("must look like BTC-USDT")
        return v

    @field_validator("side")
    @classmethod
    def _side(cls, v: str) -> str:
        if v.lower() not in ("buy", "sell"):
            raise ValueError("must be buy or sell")
        return v.lower()

    @field_validator("quantity")
    @classmethod
    def _quantity(cls, v: str) -> str:
        try:
            q = Decimal(v)
        except InvalidOperation:
            raise ValueError("must be a decimal number as a string, e.g. \"0.01\"") from None
        if not q.is_finite() or q <= 0:
            raise ValueError("must be > 0")
        return v


def _bad(field: str, message: str, status: int = 422) -> Response:
    return OrjsonResponse({"detail": f"invalid parameter: {field}: {message}",
                           "errors": [{"parameter": field, "in": "body", "error": message}]},
                          status_code=status)


def register_control(app: FastAPI, sim: Simulator,  # noqa: C901 - one route table
                     check_token: Callable[[Request], None]) -> None:
    def venue_of(venue: str) -> Venue:
        found = sim.venues.get(venue)
        if found is None:
            raise HTTPException(status_code=404, detail=f"unknown venue {venue!r}; known: "
                                f"{', '.join(sim.venues)}")
        return found

    @app.get("/control/venues")
    async def list_venues() -> dict[str, Any]:
        return {"venues": [v.describe() for v in sim.venues.values()]}

    @app.get("/control/venues/{venue}/orders")
    async def list_orders(venue: str) -> dict[str, Any]:
        v = venue_of(venue)
        return {"venue": v.id, "orders": [o.record_json() for o in v.engine.records]}

    @app.get("/control/venues/{venue}/balances")
    async def balances(venue: str) -> dict[str, Any]:
        v = venue_of(venue)
        return {"venue": v.id, "balances": v.engine.account.control_json()}

    @app.get("/control/venues/{venue}/faults")
    async def list_faults(venue: str) -> dict[str, Any]:
        v = venue_of(venue)
        return {"venue": v.id, "faults": v.faults.to_json()}

    @app.post("/control/venues/{venue}/faults")
    async def add_fault(venue: str, body: FaultBody, request: Request) -> Response:
        check_token(request)
        v = venue_of(venue)
        try:
            fault = v.faults.add(body.kind, body.value, body.duration_s, body.reason)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            return _bad(field, message)
        return OrjsonResponse({"venue": v.id, "fault": fault.to_json(v.clock.monotonic_ns()),
                               "faults": v.faults.to_json()})

    @app.delete("/control/venues/{venue}/faults")
    async def clear_faults(venue: str, request: Request) -> dict[str, Any]:
        check_token(request)
        v = venue_of(venue)
        return {"venue": v.id, "cleared": v.faults.clear(), "faults": []}

    @app.post("/control/venues/{venue}/orders")
    async def external_order(venue: str, body: ExternalOrderBody, request: Request) -> Response:
        check_token(request)
        v = venue_of(venue)
        spec = v.market.specs.get(body.symbol)
        if spec is None:
            return _bad("symbol", f"unknown symbol; known: {', '.join(v.market.specs)}")
        n = len(v.engine.records) + 1
        req = OrderRequest(symbol=spec.wire, side=body.side.upper(), type="MARKET",
                           quantity=Decimal(body.quantity), client_order_id=f"ext-{n}",
                           external=True)
        try:
            order = v.engine.place(req)
        except BinanceError as exc:
            return OrjsonResponse({"detail": exc.msg, "code": exc.code,
                                   "order": v.engine.records[-1].record_json()},
                                  status_code=400)
        logger.info("external order venue=%s symbol=%s side=%s quantity=%s status=%s", v.id,
                    body.symbol, body.side, body.quantity, order.status)
        return OrjsonResponse(order.record_json())

"""Query API under ``/api`` (JSON, Decimals as strings, keyset pagination).

Lists: ``GET /api/positions|orders|fills|sessions`` with ``session``, ``mode``, ``symbol``,
``venue``, ``since``/``until`` (ISO time; naive means UTC), ``limit`` (1..1000, default 100)
and ``cursor``; they answer ``{"items": [...], "next": <cursor or null>}``. Lists are not
scoped by default (``session=all`` means the same); ``/api/summary`` defaults to this
service's own mode and session (``?session=all`` / ``?mode=all`` widen it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from arb_common.settings import CommonSettings

from . import queries
from .queries import CursorError, ListFilter

NAME = r"^[A-Za-z0-9_.-]{1,64}$"
MODE = r"^(paper|shadow|live|all)$"
SYMBOL = r"^[A-Z0-9]+-[A-Z0-9]+$"
VENUE = r"^[a-z0-9_]{1,32}$"

EngineGetter = Callable[[], Engine | None]


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _all(value: str | None) -> str | None:
    return None if value in (None, "all") else value


def list_filter(
    session: Annotated[str | None, Query(pattern=NAME, description="session id or 'all'")] = None,
    mode: Annotated[str | None, Query(pattern=MODE)] = None,
    symbol: Annotated[str | None, Query(pattern=SYMBOL)] = None,
    venue: Annotated[str | None, Query(pattern=VENUE)] = None,
    since: Annotated[datetime | None, Query(description="ISO time, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO time, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="`next` of a page")] = None,
) -> ListFilter:
    return ListFilter(
        session=_all(session), mode=_all(mode), symbol=symbol, venue=venue,
        since=_utc(since), until=_utc(until), limit=limit, cursor=cursor or None,
    )  # fmt: skip


F = Annotated[ListFilter, Depends(list_filter)]
Lister = Callable[[Engine, ListFilter], dict[str, Any]]


def register(app: FastAPI, engine: EngineGetter, settings: CommonSettings) -> None:
    def db() -> Engine:
        eng = engine()
        if eng is None:
            raise HTTPException(503, "ledger not connected yet")
        return eng

    async def run(lister: Lister, f: ListFilter) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(lister, db(), f)
        except CursorError as exc:
            raise RequestValidationError(
                [{"loc": ("query", "cursor"), "msg": f"invalid cursor: {exc}",
                  "type": "value_error", "input": f.cursor}]
            ) from None
        except (DBAPIError, OSError) as exc:
            raise HTTPException(503, f"ledger unavailable: {type(exc).__name__}") from None

    @app.get("/api/positions", tags=["ledger"])
    async def positions(f: F) -> dict[str, Any]:
        """Average-cost positions per (mode, session, venue, symbol)."""
        return await run(queries.list_positions, f)

    @app.get("/api/orders", tags=["ledger"])
    async def orders(f: F) -> dict[str, Any]:
        """Orders, newest first (``since``/``until`` on ``created_at``)."""
        return await run(queries.list_orders, f)

    @app.get("/api/fills", tags=["ledger"])
    async def fills(f: F) -> dict[str, Any]:
        """Fills, newest first (``since``/``until`` on ``ts``)."""
        return await run(queries.list_fills, f)

    @app.get("/api/sessions", tags=["ledger"])
    async def sessions(f: F) -> dict[str, Any]:
        """Sessions, newest first (``since``/``until`` on ``started_at``)."""
        return await run(queries.list_sessions, f)

    @app.get("/api/summary", tags=["ledger"])
    async def summary(
        session: Annotated[str | None, Query(pattern=NAME)] = None,
        mode: Annotated[str | None, Query(pattern=MODE)] = None,
    ) -> dict[str, Any]:
        """Realized PnL, fees, closed round trips and winrate, per symbol and total."""
        sess = settings.session if session is None else _all(session)
        md = settings.mode.value if mode is None else _all(mode)
        try:
            return await asyncio.to_thread(queries.summary, db(), md, sess)
        except (DBAPIError, OSError) as exc:
            raise HTTPException(503, f"ledger unavailable: {type(exc).__name__}") from None

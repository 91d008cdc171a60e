"""Query API under ``/api`` (JSON, Decimals as strings, keyset pagination).

Lists: ``GET /api/positions|orders|fills|sessions|trades|equity|slippage`` with ``session``,
``mode``, ``symbol``, ``venue``, ``since``/``until`` (ISO time; naive means UTC), ``limit``
(1..1000, default 100) and ``cursor``; they answer ``{"items": [...], "next": <cursor or
null>}``. Lists are not scoped by default (``session=all`` means the same);
``/api/summary`` defaults to this service's own mode and session (``?session=all`` /
``?mode=all`` widen it). ``/api/sync_status`` is the last reconciliation run per venue.
``/api/balances`` (``mode``, ``session``, ``venue``, ``asset``, ``limit``, ``cursor``) are the
paper/shadow accounts the ledger keeps and the venues' latest live balances, one row per
(mode, session, venue, asset).
A bad parameter answers 422 with the parameter's name in ``detail``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.settings import CommonSettings

from . import queries, stats
from .marks import MarkSource
from .queries import CursorError, ListFilter

NAME = r"^[A-Za-z0-9_.-]{1,64}$"
MODE = r"^(paper|shadow|live|all)$"
SYMBOL = r"^[A-Z0-9]+-[A-Z0-9]+$"
VENUE = r"^[a-z0-9_]{1,32}$"
ASSET = r"^[A-Z0-9]{1,20}$"
DEFAULT_RISK_UNIT_BPS = Decimal(50)

EngineGetter = Callable[[], Engine | None]

Session = Annotated[str | None, Query(pattern=NAME, description="session id or 'all'")]
Mode = Annotated[str | None, Query(pattern=MODE, description="paper|shadow|live or 'all'")]
Symbol = Annotated[str | None, Query(pattern=SYMBOL, description="e.g. BTC-USDT")]
Venue = Annotated[str | None, Query(pattern=VENUE, description="venue id, e.g. alpha")]
Since = Annotated[datetime | None, Query(description="ISO time, inclusive")]
Until = Annotated[datetime | None, Query(description="ISO time, exclusive")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=512, description="`next` of a page")]


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _all(value: str | None) -> str | None:
    return None if value in (None, "all") else value


def list_filter(
    session: Session = None, mode: Mode = None, symbol: Symbol = None, venue: Venue = None,
    since: Since = None, until: Until = None, limit: Limit = 100, cursor: Cursor = None,
) -> ListFilter:  # fmt: skip
    return ListFilter(
        session=_all(session), mode=_all(mode), symbol=symbol, venue=venue,
        since=_utc(since), until=_utc(until), limit=limit, cursor=cursor or None,
    )  # fmt: skip


def equity_filter(
    session: Session = None, mode: Mode = None, since: Since = None, until: Until = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> ListFilter:  # fmt: skip
    return list_filter(session, mode, None, None, since, until, limit, cursor)


F = Annotated[ListFilter, Depends(list_filter)]
EquityF = Annotated[ListFilter, Depends(equity_filter)]


class _Ledger:
    """Runs a query in a worker thread; maps cursor errors to 422 and a down ledger to 503."""

    def __init__(self, engine: EngineGetter) -> None:
        self.engine = engine

    async def __call__(self, fn: Callable[..., dict[str, Any]], *args: Any,
                       **kw: Any) -> dict[str, Any]:  # fmt: skip
        eng = self.engine()
        if eng is None:
            raise HTTPException(503, "ledger not connected yet")
        try:
            return await asyncio.to_thread(fn, eng, *args, **kw)
        except CursorError as exc:
            raise RequestValidationError(
                [{"loc": ("query", "cursor"), "msg": f"invalid cursor: {exc}",
                  "type": "value_error", "input": None}]
            ) from None  # fmt: skip
        except (DBAPIError, OSError) as exc:
            raise HTTPException(503, f"ledger unavailable: {type(exc).__name__}") from None


def register(
    app: FastAPI, engine: EngineGetter, settings: CommonSettings, *,
    marks: MarkSource | None = None, clock: Clock = SYSTEM_CLOCK,
) -> None:  # fmt: skip
    """Add the ``/api`` routes. ``marks`` values open positions (latest book mid); without
    it, or for a venue+symbol with no book seen, the last fill price is used."""
    run = _Ledger(engine)
    _ledger_routes(app, run)
    _analytics_routes(app, run, settings, marks, clock)


def _ledger_routes(app: FastAPI, run: _Ledger) -> None:
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

    @app.get("/api/equity", tags=["ledger"])
    async def equity(f: EquityF) -> dict[str, Any]:
        """Equity history (realized + unrealized per session over time), newest first."""
        return await run(queries.list_equity, f)

    @app.get("/api/balances", tags=["ledger"])
    async def balances(
        session: Session = None, mode: Mode = None, venue: Venue = None,
        asset: Annotated[str | None, Query(pattern=ASSET, description="e.g. USDT")] = None,
        limit: Limit = 100, cursor: Cursor = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Free (and locked) balance per (mode, session, venue, asset), in key order: paper
        and shadow accounts as the ledger keeps them from EXEC (``source`` ``ledger``: the
        executor's last balance snapshot plus every fill since), and for ``live`` each venue
        account's latest reading by the reconciler (``source`` ``venue``, ``session`` "")."""
        f = list_filter(session, mode, None, venue, None, None, limit, cursor)
        return await run(queries.list_balances, f, asset)

    @app.get("/api/sync_status", tags=["ledger"])
    async def sync_status(venue: Venue = None) -> dict[str, Any]:
        """The last reconciliation run per venue (started_at, duration_ms, ok, error) with
        every discrepancy it found (kind, detail, resolution, client_order_id)."""
        return await run(queries.sync_status, venue)


def _analytics_routes(
    app: FastAPI, run: _Ledger, settings: CommonSettings, marks: MarkSource | None,
    clock: Clock,
) -> None:  # fmt: skip
    risk_unit_bps: Decimal = getattr(settings, "risk_unit_bps", DEFAULT_RISK_UNIT_BPS)

    @app.get("/api/trades", tags=["analytics"])
    async def trades(f: F) -> dict[str, Any]:
        """Closed round trips, most recently closed first (``since``/``until`` on the exit
        time; ``venue``: trips with a leg on it): entry/exit time and VWAP per side,
        quantity, fees, slippage (when analysed), PnL and R multiple."""
        return await run(stats.list_trades, f, risk_unit_bps)

    @app.get("/api/slippage", tags=["analytics"])
    async def slippage(
        f: F, days: Annotated[float | None, Query(gt=0, le=3650, description="last N days")]
        = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Expected (intent) vs realized (fill) price per fill, newest first, plus count,
        mean/median/p95 ``slippage_bps`` and total ``slippage_quote`` per (symbol, venue,
        side) over everything selected. Positive slippage = worse than expected."""
        if days is not None:
            start = datetime.fromtimestamp(clock.now_ns() / 1e9, UTC) - timedelta(days=days)
            f = replace(f, since=max(start, f.since or start))
        return await run(queries.slippage_report, f)

    @app.get("/api/summary", tags=["analytics"])
    async def summary(session: Session = None, mode: Mode = None) -> dict[str, Any]:
        """Per symbol and for the portfolio: realized and unrealized PnL (marks: latest book
        mid, else last fill price; ``marks`` says which), equity, fees, closed round trips,
        winrate, average R, expectancy and max drawdown."""
        sess = settings.session if session is None else _all(session)
        md = settings.mode.value if mode is None else _all(mode)
        return await run(stats.summary, md, sess, marks=marks, risk_unit_bps=risk_unit_bps)

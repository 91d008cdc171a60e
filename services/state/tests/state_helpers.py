"""Builders shared by the state tests (events as the bus would deliver them)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config

from arb_common.messages import (
    BalanceSnapshot,
    Envelope,
    FillEvent,
    OrderEvent,
    decode,
    encode,
)

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"
T0 = 1_700_000_000_000_000_000


def alembic_config(url: str) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: str, target: str = "head") -> None:
    command.upgrade(alembic_config(url), target)


def downgrade(url: str, target: str) -> None:
    command.downgrade(alembic_config(url), target)


def event(
    payload: Any, msg_id: str | None = None, *, mode: str = "paper", session: str = "s1",
    ts: int = T0,
) -> tuple[Envelope, Any]:  # fmt: skip
    data = encode(payload, msg_id=msg_id or "x", source="test", session=session, mode=mode, ts=ts)
    return decode(data)


def fill(
    trade: str, side: str, qty: str, price: str, *, fee: str = "0", fee_asset: str = "USDT",
    venue: str = "alpha", symbol: str = "BTC-USDT", coid: str = "c1", ts: int = T0,
    intent_id: str = "", trade_id: str = "",
) -> FillEvent:  # fmt: skip
    return FillEvent(
        venue=venue, symbol=symbol, client_order_id=coid, venue_trade_id=trade, side=side,  # type: ignore[arg-type]
        quantity=Decimal(qty), price=Decimal(price), fee=Decimal(fee), fee_asset=fee_asset,
        ts=ts, intent_id=intent_id, trade_id=trade_id, venue_order_id="v-" + coid,
    )  # fmt: skip


def order(
    coid: str, status: str, filled: str = "0", *, qty: str = "1", venue: str = "alpha",
    symbol: str = "BTC-USDT", side: str = "buy", ts: int = T0, avg: str | None = None,
    venue_order_id: str | None = None,
) -> OrderEvent:  # fmt: skip
    return OrderEvent(
        venue=venue, symbol=symbol, client_order_id=coid, side=side,  # type: ignore[arg-type]
        quantity=Decimal(qty), filled_quantity=Decimal(filled), status=status,  # type: ignore[arg-type]
        avg_price=Decimal(avg) if avg else None, ts=ts, venue_order_id=venue_order_id,
    )  # fmt: skip


def snapshot(venue: str = "alpha", as_of: int = 0, **balances: str) -> BalanceSnapshot:
    """A paper venue's balances as the executor publishes them (``USDT="1000"``)."""
    return BalanceSnapshot(venue=venue, balances={a: Decimal(v) for a, v in balances.items()},
                           as_of_seq=as_of)


async def all_pages(c: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list (each page within ``limit``), following ``next``."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        r = await c.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= int(params.get("limit", 100))
        items += body["items"]
        cursor = body["next"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")

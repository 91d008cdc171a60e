"""Missing fills: the venue's own trade list (``GET /api/v3/myTrades``) vs the ledger's fills.

Over a lookback that covers the ledger's last activity on the venue (the oldest open order,
the newest fill, at most ``ARB_RECON_LOOKBACK_S``), every trade of ours that the ledger does
not hold is published as a ``FillEvent`` (msg id ``fill:<venue>:<trade id>``, so a re-run or
an interrupted run publishes it at most once into the ledger, which is unique on it) and its
order's venue state as an ``OrderEvent`` correction. A trade whose order is not in the ledger
is looked up by order id: one of our client order ids (sent, never recorded) is recorded the
same way; anyone else's is an ``external_trade`` (see :mod:`arb_reconciler.external`).

Example myTrades entry (raw, strings)::

    {"symbol": "BTCUSDT", "id": 28457, "orderId": 100234, "price": "4.00000100",
     "qty": "12.00000000", "commission": "10.10000000", "commissionAsset": "BNB",
     "time": 1499865549590, "isBuyer": true, "isMaker": false, "isBestMatch": true}
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from arb_common.messages import Side
from arb_executor.venue_client import VenueClient, VenueOrder, ccxt_symbol, classify, parse_order

MAX_PAGES = 20  # x 1000 trades per symbol and run; more is reported as truncated


@dataclass(frozen=True)
class VenueTrade:
    venue: str
    symbol: str
    trade_id: str
    venue_order_id: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    ts_ms: int


def parse_my_trade(venue: str, symbol: str, t: dict[str, Any]) -> VenueTrade:
    info = t.get("info") or t
    buyer = info.get("isBuyer")
    side: Side = "buy" if (buyer is True or str(buyer).lower() == "true"
                           or (buyer is None and t.get("side") == "buy")) else "sell"
    return VenueTrade(
        venue=venue, symbol=symbol, trade_id=str(info.get("id", t.get("id"))),
        venue_order_id=str(info.get("orderId", t.get("order"))), side=side,
        quantity=Decimal(str(info.get("qty", t.get("amount")))),
        price=Decimal(str(info.get("price", t.get("price")))),
        fee=Decimal(str(info.get("commission", "0"))),
        fee_asset=str(info.get("commissionAsset") or ""),
        ts_ms=int(info.get("time") or t.get("timestamp") or 0),
    )


async def my_trades(client: VenueClient, symbol: str, since_ms: int) -> tuple[list[VenueTrade],
                                                                             bool]:
    """Our trades on ``symbol`` since ``since_ms`` (paged); (trades, truncated)."""
    out: list[VenueTrade] = []
    since = since_ms
    for _ in range(MAX_PAGES):
        try:
            page = await client.ex.fetch_my_trades(ccxt_symbol(symbol), since=since, limit=1000)
        except Exception as exc:  # noqa: BLE001 - classified: the run fails, proves nothing
            raise classify(exc) from exc
        trades = [parse_my_trade(client.venue, symbol, t) for t in page]
        out.extend(trades)
        if len(page) < 1000:
            return _unique(out), False
        since = max(t.ts_ms for t in trades) + 1
    return _unique(out), True


async def order_by_id(client: VenueClient, symbol: str, venue_order_id: str) -> VenueOrder:
    """The order (with its client order id) that a trade belongs to."""
    try:
        order = await client.ex.fetch_order(venue_order_id, ccxt_symbol(symbol))
    except Exception as exc:  # noqa: BLE001
        raise classify(exc) from exc
    return parse_order(order, symbol)


def _unique(trades: list[VenueTrade]) -> list[VenueTrade]:
    seen: dict[str, VenueTrade] = {}
    for t in trades:
        seen.setdefault(t.trade_id, t)
    return list(seen.values())


class AuditClient(VenueClient):
    """The venue client the reconciler uses: the executor's adapter plus the audit reads."""

    async def my_trades(self, symbol: str, since_ms: int) -> tuple[list[VenueTrade], bool]:
        return await my_trades(self, symbol, since_ms)

    async def order_by_id(self, symbol: str, venue_order_id: str) -> VenueOrder:
        return await order_by_id(self, symbol, venue_order_id)

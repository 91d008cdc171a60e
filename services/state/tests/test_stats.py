"""Round trips and trade statistics over a real ledger, checked against hand computations.

The book used by most tests (risk_unit_bps = 100, so one R = 1% of the entry notional; every
entry buys 1 @ 99 on alpha and sells 1 @ 100 on beta → entry notional 100, one R = 1 USDT):

| trade | symbol | close (alpha sell / beta buy) | alpha | beta | fees | PnL  | R    |
|-------|--------|-------------------------------|-------|------|------|------|------|
| T1    | BTC    | 100 / 99                      | +1    | +1   | 0.4  | +1.6 | +1.6 |
| T2    | BTC    | 98 / 101.5                    | -1    | -1.5 | 0    | -2.5 | -2.5 |
| T3    | BTC    | 100 / 99.5                    | +1    | +0.5 | 0    | +1.5 | +1.5 |
| T5    | ETH    | 9.9 / 10 (entry 10 / 10)      | -0.1  | 0    | 0    | -0.1 | -1   |
| T4    | BTC    | still open (long alpha 1 @ 99, short beta 1 @ 100)                 |

T1's alpha entry is two partial fills, 0.5 @ 98.8 and 0.5 @ 99.2 (VWAP 99).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from state_helpers import T0, event, fill

from arb_common.ledger import EquityHistory
from arb_common.messages import Book, Intent
from arb_common.runtime import ServiceRuntime
from arb_common.settings import Mode
from arb_state.analytics import derive_slippage, ingest_intents
from arb_state.api import register
from arb_state.config import StateSettings
from arb_state.ingest import ingest_batch
from arb_state.marks import Marks

S = 1_000_000_000
BTC, ETH = "BTC-USDT", "ETH-USDT"


def _api(engine: Engine, marks: Marks | None = None) -> httpx.AsyncClient:
    settings = StateSettings(session="s1", mode=Mode.paper, risk_unit_bps=Decimal(100))
    rt = ServiceRuntime("state", settings)
    register(rt.app, lambda: engine, settings, marks=marks)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.app), base_url="http://state")


@pytest.fixture
def marks() -> Marks:
    m = Marks(max_age_s=None)
    m.update(Book(venue="alpha", symbol=BTC, seq=1, bids=[(Decimal(101), Decimal(1))],
                  asks=[(Decimal(102), Decimal(1))]))  # mid 101.5
    return m


@pytest.fixture
async def client(engine: Engine, marks: Marks) -> AsyncIterator[httpx.AsyncClient]:
    async with _api(engine, marks) as c:
        yield c


class Trades:
    """Writes round trips as the executor would report them (each fill its own event)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.n = 0

    def leg(self, trade: str, action: str, side: str, venue: str, px: str, *, t: int,
            qty: str = "1", fee: str = "0", symbol: str = BTC, session: str = "s1") -> None:
        self.n += 1
        self.events.append(event(
            fill(f"{trade}-{self.n}", side, qty, px, fee=fee, venue=venue, symbol=symbol,
                 coid=f"{trade}{action}{side}", intent_id=f"{trade}:{action}", trade_id=trade,
                 ts=T0 + t * S),
            session=session))  # fmt: skip

    def trip(self, trade: str, *, t: int, close: tuple[str, str] | None, entry: tuple[str, str]
             = ("99", "100"), symbol: str = BTC, fee: str = "0", session: str = "s1") -> None:
        self.leg(trade, "open", "buy", "alpha", entry[0], t=t, fee=fee, symbol=symbol,
                 session=session)
        self.leg(trade, "open", "sell", "beta", entry[1], t=t, fee=fee, symbol=symbol,
                 session=session)
        if close is not None:
            self.leg(trade, "close", "sell", "alpha", close[0], t=t + 5, fee=fee,
                     symbol=symbol, session=session)
            self.leg(trade, "close", "buy", "beta", close[1], t=t + 5, fee=fee, symbol=symbol,
                     session=session)


def _book(engine: Engine) -> None:
    b = Trades()
    # T1: the alpha entry in two partial fills (VWAP 99) sharing a 0.1 fee; 0.1 on each of
    # the other three fills → 0.4 in all.
    b.leg("T1", "open", "buy", "alpha", "98.8", t=0, qty="0.5", fee="0.05")
    b.leg("T1", "open", "buy", "alpha", "99.2", t=0, qty="0.5", fee="0.05")
    b.leg("T1", "open", "sell", "beta", "100", t=0, fee="0.1")
    b.leg("T1", "close", "sell", "alpha", "100", t=5, fee="0.1")
    b.leg("T1", "close", "buy", "beta", "99", t=5, fee="0.1")
    b.trip("T2", t=10, close=("98", "101.5"))
    b.trip("T3", t=20, close=("100", "99.5"))
    b.trip("T5", t=30, close=("9.9", "10"), entry=("10", "10"), symbol=ETH)
    b.trip("T4", t=40, close=None)
    ingest_batch(engine, b.events)


async def test_summary_matches_hand_computed_statistics(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    _book(engine)
    body = (await client.get("/api/summary")).json()
    btc, eth, total = body["symbols"][BTC], body["symbols"][ETH], body["total"]
    # BTC: wins T1 (1.6) and T3 (1.5), loss T2 (2.5): winrate 2/3, avg win 1.55,
    # expectancy (3.1 - 2.5) / 3 = 0.2, avg R (1.6 - 2.5 + 1.5) / 3 = 0.2,
    # cumulative 1.6 → -0.9 → 0.6: max drawdown 1.6 - (-0.9) = 2.5.
    assert {k: btc[k] for k in ("trades", "wins", "losses", "winrate", "open_trades")} == {
        "trades": 3, "wins": 2, "losses": 1, "winrate": 0.6667, "open_trades": 1}
    assert (btc["avg_win"], btc["avg_loss"], btc["expectancy"]) == ("1.55", "2.5", "0.2")
    assert (btc["avg_r"], btc["max_drawdown"], btc["round_trip_pnl"]) == (0.2, "2.5", "0.6")
    # Realized from positions: alpha 0.8 - 1 + 1 (T1 net of its 0.2 fees, T2, T3) and beta
    # 0.8 - 1.5 + 0.5; the open T4 has realized nothing: 0.6 = the round trips' sum.
    assert btc["realized_pnl"] == "0.6" and btc["fees"] == "0.4"
    # Open T4: alpha long 1 @ 99 marked at the book mid 101.5 → +2.5; beta short 1 @ 100 with
    # no book → last beta fill (T4's sell @ 100) → 0.
    assert btc["unrealized_pnl"] == "2.5" and btc["equity"] == "3.1"
    assert btc["marks"] == {"alpha": {"price": "101.5", "source": "book"},
                            "beta": {"price": "100", "source": "last_fill"}}
    assert btc["open_quantity"] == "0"  # +1 alpha, -1 beta
    # ETH: one loss of 0.1 on an entry notional of 10 → R = -0.1 / 0.1 = -1.
    assert (eth["trades"], eth["wins"], eth["winrate"], eth["avg_win"]) == (1, 0, 0.0, None)
    assert (eth["avg_loss"], eth["expectancy"], eth["avg_r"], eth["max_drawdown"]) == (
        "0.1", "-0.1", -1.0, "0.1")
    # Portfolio in close order T1 1.6, T2 -2.5, T3 1.5, T5 -0.1: cumulative 1.6, -0.9, 0.6,
    # 0.5 → drawdown 2.5; expectancy (3.1 - 2.6) / 4 = 0.125; avg R (0.6 - 1) / 4 = -0.1.
    assert (total["trades"], total["wins"], total["winrate"]) == (4, 2, 0.5)
    assert (total["avg_win"], total["avg_loss"], total["expectancy"]) == ("1.55", "1.3", "0.125")
    assert (total["avg_r"], total["max_drawdown"]) == (-0.1, "2.5")
    assert (total["realized_pnl"], total["unrealized_pnl"], total["equity"]) == (
        "0.5", "2.5", "3")
    assert total["max_drawdown_equity"] is None  # no equity history yet


async def test_unrealized_falls_back_to_last_fill_price_without_books(engine: Engine) -> None:
    _book(engine)
    async with _api(engine, marks=None) as c:
        btc = (await c.get("/api/summary")).json()["symbols"][BTC]
    # alpha's last fill is T4's buy @ 99 = its avg price: 0; beta likewise.
    assert btc["unrealized_pnl"] == "0"
    assert {m["source"] for m in btc["marks"].values()} == {"last_fill"}


async def test_max_drawdown_from_equity_history_stays_within_a_session(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [("s1", v) for v in (0, 5, 1, 6, 4)] + [("s2", v) for v in (10, 0)]
    with engine.begin() as conn:
        conn.execute(insert(EquityHistory), [
            {"mode": "paper", "session": s, "ts": t + timedelta(seconds=i), "equity": v,
             "realized": v, "unrealized": 0}
            for i, (s, v) in enumerate(rows)
        ])  # fmt: skip
    own = (await client.get("/api/summary")).json()["total"]
    assert own["max_drawdown_equity"] == "4"  # s1: 5 → 1 is 4 (6 → 4 is 2)
    every = (await client.get("/api/summary", params={"session": "all"})).json()["total"]
    assert every["max_drawdown_equity"] == "10"  # s2: 10 → 0; s1's 0 → ... never joins s2


async def test_trades_show_entry_exit_vwap_fees_pnl_and_r(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    _book(engine)
    body = (await client.get("/api/trades", params={"session": "s1"})).json()
    assert [t["trade_id"] for t in body["items"]] == ["T5", "T3", "T2", "T1"]  # last closed 1st
    assert body["next"] is None
    t1 = body["items"][-1]
    assert t1["entry"]["buy"] == {"venues": ["alpha"], "quantity": "1", "vwap": "99"}
    assert t1["entry"]["sell"] == {"venues": ["beta"], "quantity": "1", "vwap": "100"}
    assert t1["exit"]["sell"] == {"venues": ["alpha"], "quantity": "1", "vwap": "100"}
    assert t1["exit"]["buy"] == {"venues": ["beta"], "quantity": "1", "vwap": "99"}
    assert (t1["quantity"], t1["fees"], t1["pnl"], t1["r_multiple"]) == ("1", "0.4", "1.6", 1.6)
    assert t1["entry"]["ts"] == "2023-11-14T22:13:20+00:00"
    assert t1["exit"]["ts"] == "2023-11-14T22:13:25+00:00"
    assert t1["slippage"] is None  # no slippage analysis for these fills
    assert (t1["venues"], t1["symbol"], t1["mode"], t1["session"]) == (
        ["alpha", "beta"], BTC, "paper", "s1")


async def test_trade_filters_symbol_venue_and_exit_time(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    _book(engine)

    async def ids(**params: str) -> list[str]:
        r = await client.get("/api/trades", params=params)
        assert r.status_code == 200, r.text
        return [t["trade_id"] for t in r.json()["items"]]

    assert await ids(symbol=ETH) == ["T5"]
    assert await ids(venue="beta", symbol=BTC) == ["T3", "T2", "T1"]
    assert await ids(venue="gamma") == []
    # Exits (T0 = 22:13:20): T2 at :35, T3 at :45, T5 at :55; until is exclusive.
    assert await ids(since="2023-11-14T22:13:36Z", until="2023-11-14T22:13:56Z") == ["T5", "T3"]
    assert await ids(since="2023-11-14T22:13:35Z", until="2023-11-14T22:13:55Z") == ["T3", "T2"]
    assert await ids(mode="live") == []


async def test_trades_paginate_across_pages_without_gaps(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    b = Trades()
    for i in range(25):  # trips closing two at a time share a timestamp: the key breaks ties
        b.trip(f"P{i:02d}", t=(i // 2) * 10, close=("100", "99"))
    ingest_batch(engine, b.events)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/trades", params=params)).json()
        seen += [t["trade_id"] for t in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 25 and set(seen) == {f"P{i:02d}" for i in range(25)}
    one_page = (await client.get("/api/trades", params={"limit": 1000})).json()["items"]
    assert [t["trade_id"] for t in one_page] == seen


async def test_trade_carries_the_slippage_of_its_fills(
    engine: Engine, client: httpx.AsyncClient
) -> None:
    _book(engine)

    def intent(action: str, sell: str) -> Intent:
        return Intent(intent_id=f"T1:{action}", trade_id="T1", symbol=BTC, action=action,  # type: ignore[arg-type]
                      buy_venue="alpha", sell_venue="beta", quantity=Decimal(1),
                      buy_price=Decimal(99), sell_price=Decimal(sell),
                      net_spread_bps=Decimal(0))  # fmt: skip

    ingest_intents(engine, [event(intent("open", "100")), event(intent("close", "100.5"))])
    assert derive_slippage(engine) == 5  # T1's fills only: no other trade has intents
    t1 = (await client.get("/api/trades", params={"limit": 1000})).json()["items"][-1]
    # open buys 0.5 @ 98.8 (-0.1) and 0.5 @ 99.2 (+0.1) vs 99; sell 100 vs 100 (0); close
    # sell 100 vs 100.5 (+0.5); buy 99 vs 99 (0) → 0.5 quote over an expected notional of
    # 49.5 + 49.5 + 100 + 100.5 + 99 = 398.5 → 12.5471 bps.
    assert t1["slippage"] == {"fills": 5, "quote": "0.5", "bps": 12.5471}


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/api/trades", {"limit": "0"}, "limit"),
        ("/api/trades", {"since": "soon"}, "since"),
        ("/api/trades", {"cursor": "WyJmaWxsIiwieCIsMV0"}, "cursor"),  # a fill cursor
        ("/api/trades", {"symbol": "btc"}, "symbol"),
        ("/api/summary", {"mode": "demo"}, "mode"),
        ("/api/summary", {"session": "bad session"}, "session"),
    ],
)
async def test_bad_trade_and_summary_parameters_answer_422(
    client: httpx.AsyncClient, path: str, params: dict[str, str], name: str
) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert name in r.json()["detail"]

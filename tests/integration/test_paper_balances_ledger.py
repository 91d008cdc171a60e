"""Paper balances per venue live in the ledger: the executor's paper venues and the ledger's
accounts (``balances``, source ``ledger``) agree after trading and after every restart.

Real NATS JetStream and PostgreSQL; in-process: the executor's paper venues and intent
executor (as its app builds them) and the state service's ledger writer behind the same
durable, in-order EXEC consumer the state service uses (ack after commit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal as D

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from arb_common.bus import Bus, Delivery
from arb_common.ledger import Balance
from arb_common.messages import BalanceSnapshot, Book, FillEvent, Intent, OrderEvent, VenueReady
from arb_common.messages import decode as decode_msg
from arb_common.settings import Mode
from arb_common.testing import connected_bus, wait_until
from arb_executor.arbitrage import IntentExecutor
from arb_executor.config import ExecutorSettings
from arb_executor.gate import Gate
from arb_executor.paper import PaperVenue
from arb_executor.paper_state import build_paper_venues
from arb_executor.venue_client import MarketRules
from arb_state.ingest import LedgerWriter

pytestmark = pytest.mark.integration

RULES = {v: {"BTC-USDT": MarketRules("BTC-USDT", D("0.001"), D("0.001"), D("10"), "BTC", "USDT")}
         for v in ("alpha", "beta")}
VENUES = ("alpha", "beta")


class LedgerSide:
    """The state service's EXEC → ledger path: its writer, its consumer's settings."""

    def __init__(self, bus: Bus, engine: Engine) -> None:
        self.bus = bus
        self.engine = engine
        self.writer = LedgerWriter(engine.url.render_as_string(hide_password=False))
        self.through = 0  # every EXEC event at or below it is committed

    async def handle(self, batch: Sequence[Delivery]) -> None:
        events = [(d.env, d.payload, d.msg.metadata.sequence.stream) for d in batch]
        await self.writer.ingest(events)
        self.through = max(self.through, *(seq for _, _, seq in events))

    def start(self) -> None:
        self.bus.consume(stream="EXEC", durable="state-ledger",
                         filter_subject=self.bus.subjects.any("exec.>"),
                         batch_handler=self.handle, batch=4, in_order=True)

    async def caught_up(self) -> None:
        info = await self.bus.js.stream_info(self.bus.subjects.stream_name("EXEC"))
        last = info.state.last_seq
        await wait_until(lambda: self.through >= last, 15, what=f"ledger at EXEC seq {last}")

    def accounts(self, mode: str = "paper", session: str = "s1") -> dict[str, dict[str, D]]:
        b = Balance
        with self.engine.connect() as conn:
            rows = conn.execute(select(b.venue, b.asset, b.free).where(
                b.source == "ledger", b.mode == mode, b.session == session)).all()
        out: dict[str, dict[str, D]] = {}
        for r in rows:
            out.setdefault(r.venue, {})[r.asset] = r.free
        return out


@pytest.fixture
async def bus(nats_url: str, bus_prefix: str, cleanup_streams: None) -> AsyncIterator[Bus]:
    async with connected_bus(nats_url, bus_prefix, "executor", session="s1") as b:
        for v in VENUES:
            await b.publish(b.subjects.ready(v), VenueReady(venue=v, ready=True, run_id="r"),
                            f"ready:{v}:r:1")
        yield b


@pytest.fixture
async def state(bus: Bus, ledger_engine: Engine) -> AsyncIterator[LedgerSide]:
    side = LedgerSide(bus, ledger_engine)
    side.start()
    yield side
    await side.writer.close()


def settings(bus_prefix: str, nats_url: str, balances: str) -> ExecutorSettings:
    return ExecutorSettings(nats_url=nats_url, bus_prefix=bus_prefix, session="s1",
                            mode=Mode.paper, venues="alpha,beta", symbols="BTC-USDT",
                            paper_balances=balances)


async def executor_start(bus: Bus, bus_prefix: str, nats_url: str,
                         balances: str = "USDT=1000,BTC=1") -> dict[str, PaperVenue]:
    """What the executor does at (re)start in paper mode: venues rebuilt, balances published;
    books fed as the market-data service would."""
    venues = await build_paper_venues(bus, settings(bus_prefix, nats_url, balances), {}, RULES)
    books = venues["alpha"].books
    books.update(Book(venue="alpha", symbol="BTC-USDT", seq=1, bids=[(D("99"), D("5"))],
                      asks=[(D("100"), D("0.2")), (D("100.5"), D("5"))]))
    books.update(Book(venue="beta", symbol="BTC-USDT", seq=1, bids=[(D("102"), D("5"))],
                      asks=[(D("103"), D("5"))]))
    return venues


def balances_of(venues: dict[str, PaperVenue]) -> dict[str, dict[str, D]]:
    return {v: venues[v].balances() for v in VENUES}


async def execute(bus: Bus, venues: dict[str, PaperVenue], n: int, action: str = "open") -> None:
    gate = Gate(list(VENUES))
    await gate.start(bus)
    buy, sell = ("alpha", "beta") if action == "open" else ("beta", "alpha")
    intent = Intent(intent_id=f"T{n}:{action}", trade_id=f"T{n}", symbol="BTC-USDT",
                    action=action, buy_venue=buy, sell_venue=sell,  # type: ignore[arg-type]
                    quantity=D("0.5"), buy_price=D("100.3"), sell_price=D("102"),
                    net_spread_bps=D("50"))
    env, payload = decode_msg(bus.envelope(intent, f"intent:{intent.intent_id}"))
    await IntentExecutor(bus, venues, gate).handle(env, payload)


async def test_ledger_holds_the_paper_balances_and_agrees_with_the_executor_across_restarts(
        bus: Bus, state: LedgerSide, nats_url: str, bus_prefix: str) -> None:
    first = await executor_start(bus, bus_prefix, nats_url)
    await state.caught_up()
    assert state.accounts() == {v: {"USDT": D("1000"), "BTC": D("1")} for v in VENUES}

    await execute(bus, first, 1)
    await state.caught_up()
    # alpha bought 0.2@100 + 0.3@100.5 (+0.1% fee), beta sold 0.5@102 (-0.1% fee)
    assert first["alpha"].balances() == {"USDT": D("949.79985"), "BTC": D("1.5")}
    assert state.accounts() == balances_of(first)

    # kill -9 and restart, even with other start balances configured: the session's account
    # is what the stream says (its snapshot and the fills after it), in both places.
    second = await executor_start(bus, bus_prefix, nats_url, balances="USDT=5,BTC=5")
    assert balances_of(second) == balances_of(first)
    await execute(bus, second, 1, "close")
    await state.caught_up()
    assert state.accounts() == balances_of(second)

    third = await executor_start(bus, bus_prefix, nats_url)
    await state.caught_up()
    assert balances_of(third) == balances_of(second) == state.accounts()
    assert state.accounts(mode="live") == {} and state.accounts(session="s2") == {}


async def test_a_fill_the_replay_rebuilt_reaches_the_ledger_when_published_not_before(
        bus: Bus, state: LedgerSide, nats_url: str, bus_prefix: str) -> None:
    await executor_start(bus, bus_prefix, nats_url)
    # crash between a paper order's FILLED event and its second fill's event
    for status, filled in (("NEW", "0"), ("FILLED", "1")):
        await bus.publish(bus.subjects.order("alpha", "BTC-USDT"), OrderEvent(
            venue="alpha", symbol="BTC-USDT", client_order_id="P1", side="buy",
            quantity=D("1"), filled_quantity=D(filled), status=status,  # type: ignore[arg-type]
            venue_order_id="paper-P1", avg_price=D("100.6") if filled == "1" else None),
            f"order:P1:{status}")
    first = FillEvent(venue="alpha", symbol="BTC-USDT", client_order_id="P1",
                      venue_trade_id="paper-P1-1", side="buy", quantity=D("0.4"),
                      price=D("100"), fee=D("0.04"), fee_asset="USDT", ts=1)
    await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), first, "fill:alpha:paper-P1-1")

    venues = await executor_start(bus, bus_prefix, nats_url)
    await state.caught_up()
    alpha = venues["alpha"]
    rest = alpha.orders["P1"].fills[-1]
    assert rest.trade_id == "paper-P1-rest"
    assert alpha.balances() == {"USDT": D("899.2994"), "BTC": D("2")}  # the venue did fill it
    # the ledger has what the stream says so far: not the rest (its event is not out yet)
    assert state.accounts()["alpha"] == alpha.stream_balances() == {
        "USDT": D("959.96"), "BTC": D("1.4")}
    last = await bus.last_message("EXEC", bus.subjects.balance("alpha"))
    assert last is not None and isinstance(last[1], BalanceSnapshot)
    assert last[1].balances == alpha.stream_balances()  # what was published at the restart

    # the leg publishes the rebuilt fill (redelivered intent): now both hold it, once
    await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), FillEvent(
        venue="alpha", symbol="BTC-USDT", client_order_id="P1", venue_trade_id=rest.trade_id,
        side="buy", quantity=rest.quantity, price=rest.price, fee=rest.fee,
        fee_asset=rest.fee_asset, ts=2), "fill:alpha:paper-P1-rest")
    await state.caught_up()
    await wait_until(lambda: alpha.stream_balances() == alpha.balances(), 5,
                     what="the rebuilt fill's event back at the venue")
    assert state.accounts() == balances_of(venues)


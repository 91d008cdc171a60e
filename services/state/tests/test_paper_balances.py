"""Paper and shadow accounts in the ledger (``balances``, source ``ledger``): the executor's
balance snapshot plus every fill after it, in stream order, never twice (real PostgreSQL, both
writers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from state_helpers import T0, all_pages, event, fill, order, snapshot

from arb_common.ledger import Balance
from arb_state.ingest import IngestResult, ingest_batch

D = Decimal
Ingest = Callable[[Sequence[Any]], IngestResult]


def seq(item: tuple[Any, Any], n: int) -> tuple[Any, Any, int]:
    """``item`` as delivered from the EXEC stream at sequence ``n``."""
    return (*item, n)


def accounts(engine: Engine) -> dict[tuple[str, str, str, str], Decimal]:
    """(mode, session, venue, asset) -> free, of the ledger's paper/shadow accounts."""
    b = Balance
    with engine.connect() as conn:
        rows = conn.execute(select(b.mode, b.session, b.venue, b.asset, b.free)
                            .where(b.source == "ledger")).all()
    return {(r.mode, r.session, r.venue, r.asset): r.free for r in rows}


def alpha(engine: Engine, mode: str = "paper", session: str = "s1") -> dict[str, Decimal]:
    return {k[3]: v for k, v in accounts(engine).items() if k[:3] == (mode, session, "alpha")}


START = {"USDT": "1000", "BTC": "1"}


def test_snapshot_then_fills_move_base_quote_and_fee_and_a_redelivery_changes_nothing(
        engine: Engine, ingest: Ingest) -> None:
    batch = [
        seq(event(snapshot(as_of=1, **START), "balance:alpha:1"), 2),
        seq(event(order("c1", "FILLED", "1", avg="100.5")), 3),
        seq(event(fill("t1", "buy", "0.5", "100", fee="0.05")), 4),
        seq(event(fill("t2", "buy", "0.5", "101", fee="0.0505")), 5),
        seq(event(fill("t3", "sell", "0.2", "102", fee="0.0204", coid="c2")), 6),
    ]
    result = ingest(batch)
    assert result.balance_snapshots == 1 and result.fills_inserted == 3
    # 1000 - 50 - 50.5 - 0.1005 + 20.4 - 0.0204; 1 + 1 - 0.2
    expected = {"USDT": D("919.7791"), "BTC": D("1.8")}
    assert alpha(engine) == expected
    ingest(batch)  # committed, ack lost: delivered again
    assert alpha(engine) == expected
    ingest(batch[2:])  # and a part of it
    assert alpha(engine) == expected


def test_a_fill_before_the_snapshot_is_in_it_and_one_after_goes_on_top(
        engine: Engine, ingest: Ingest) -> None:
    ingest([seq(event(snapshot(as_of=1, USDT="1000", BTC="1")), 2)])
    batch = [
        seq(event(fill("t1", "buy", "1", "100")), 3),  # in the next snapshot already
        seq(event(snapshot(as_of=3, USDT="900", BTC="2")), 4),
        seq(event(fill("t2", "sell", "0.5", "110")), 5),
    ]
    ingest(batch)
    assert alpha(engine) == {"USDT": D("955"), "BTC": D("1.5")}
    ingest(batch)
    assert alpha(engine) == {"USDT": D("955"), "BTC": D("1.5")}


def test_a_snapshot_delivered_again_after_later_fills_does_not_reset_the_account(
        engine: Engine, ingest: Ingest) -> None:
    snap = seq(event(snapshot(as_of=1, USDT="1000", BTC="1")), 2)
    ingest([snap])
    ingest([seq(event(fill("t1", "buy", "1", "100", fee="0.1")), 3)])
    ingest([snap])
    assert alpha(engine) == {"USDT": D("899.9"), "BTC": D("2")}


def test_a_fill_published_again_later_with_a_new_sequence_counts_once(
        engine: Engine, ingest: Ingest) -> None:
    ingest([seq(event(snapshot(as_of=1, USDT="1000", BTC="1")), 2)])
    f = event(fill("t1", "buy", "1", "100"), "fill:alpha:t1")
    ingest([seq(f, 3)])
    ingest([seq(f, 40)])  # re-published after JetStream's duplicate window
    assert alpha(engine) == {"USDT": D("900"), "BTC": D("2")}


def test_a_new_snapshot_replaces_the_account_and_an_asset_it_lacks_goes_to_zero(
        engine: Engine, ingest: Ingest) -> None:
    ingest([seq(event(snapshot(as_of=1, USDT="1000", BTC="1", ETH="5")), 2)])
    ingest([seq(event(fill("t1", "buy", "1", "100", symbol="SOL-USDT")), 3)])  # a new asset
    assert alpha(engine) == {"USDT": D("900"), "BTC": D("1"), "ETH": D("5"), "SOL": D("1")}
    ingest([seq(event(snapshot(as_of=3, USDT="500", BTC="3")), 4)])
    assert alpha(engine) == {"USDT": D("500"), "BTC": D("3"), "ETH": D("0"), "SOL": D("0")}
    ingest([seq(event(snapshot(as_of=4)), 5)])  # an empty account
    assert set(alpha(engine).values()) == {D(0)}


def test_a_fee_in_the_base_asset_is_taken_from_the_base(engine: Engine, ingest: Ingest) -> None:
    ingest([seq(event(snapshot(as_of=1, USDT="1000", BTC="0")), 2),
            seq(event(fill("t1", "buy", "1", "100", fee="0.001", fee_asset="BTC")), 3),
            seq(event(fill("t2", "buy", "1", "100", fee="0.5", fee_asset="BNB")), 4)])
    assert alpha(engine) == {"USDT": D("800"), "BTC": D("1.999"), "BNB": D("-0.5")}


def test_accounts_are_kept_per_mode_and_session_and_live_never_gets_one(
        engine: Engine, ingest: Ingest) -> None:
    with engine.begin() as conn:  # a reconciler's reading of the real account
        conn.execute(insert(Balance), [{"venue": "alpha", "asset": "USDT", "free": D("7"),
                                        "source": "venue", "ts": datetime.now(UTC)}])
    ingest([
        seq(event(snapshot(as_of=0, USDT="1000"), mode="paper", session="s1"), 1),
        seq(event(snapshot(as_of=1, USDT="2000"), mode="shadow", session="s1"), 2),
        seq(event(snapshot(as_of=2, USDT="3000"), mode="paper", session="s2"), 3),
        seq(event(snapshot(as_of=3, USDT="4000"), mode="live", session="s1"), 4),
        seq(event(fill("t1", "buy", "1", "100"), mode="paper", session="s1"), 5),
        seq(event(fill("t2", "buy", "1", "100"), mode="live", session="s1"), 6),
        seq(event(fill("t3", "buy", "1", "100"), mode="paper", session="s3"), 7),  # no start
    ])
    assert accounts(engine) == {
        ("paper", "s1", "alpha", "USDT"): D("900"), ("paper", "s1", "alpha", "BTC"): D("1"),
        ("shadow", "s1", "alpha", "USDT"): D("2000"), ("paper", "s2", "alpha", "USDT"): D("3000"),
    }  # fmt: skip
    b = Balance
    with engine.connect() as conn:
        venue_rows = conn.execute(select(b.mode, b.session, b.free)
                                  .where(b.source == "venue")).all()
    assert [tuple(r) for r in venue_rows] == [("live", "", D("7"))]


def test_batches_of_any_size_give_the_same_account(engine: Engine, ingest: Ingest) -> None:
    events = [seq(event(snapshot(as_of=0, USDT="1000", BTC="10")), 1)]
    expected = {"USDT": D("1"), "BTC": D("1")}  # the second snapshot's, then the fills after
    for n in range(1, 61):
        side = "buy" if n % 3 else "sell"
        ev = fill(f"t{n}", side, "0.01", str(100 + n % 7), fee="0.001", coid=f"c{n}", ts=T0 + n)
        events.append(seq(event(ev), len(events) + 1))
        if n == 30:
            events.append(seq(event(snapshot(as_of=len(events), USDT="1", BTC="1")),
                              len(events) + 1))
        elif n > 30:
            sign = 1 if side == "buy" else -1
            expected["BTC"] += sign * ev.quantity
            expected["USDT"] -= sign * ev.quantity * ev.price + ev.fee
    for start in range(0, len(events), 7):
        ingest(events[start:start + 7])
    assert alpha(engine) == expected


async def test_api_lists_paper_accounts_and_latest_live_readings_never_mixed(
        engine: Engine, client: httpx.AsyncClient) -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:  # the reconciler's readings of the real accounts
        conn.execute(insert(Balance), [
            {"venue": venue, "asset": "USDT", "free": D(free), "locked": D(locked),
             "source": "venue", "ts": t + timedelta(minutes=minutes)}
            for venue, free, locked, minutes in (("alpha", "5", "0", 0), ("alpha", "7", "1", 1),
                                                 ("beta", "9", "0", 0))
        ])  # fmt: skip
    ingest_batch(engine, [
        seq(event(snapshot("alpha", 0, USDT="1000", BTC="1"), mode="paper"), 1),
        seq(event(snapshot("beta", 1, USDT="2000"), mode="paper"), 2),
        seq(event(snapshot("alpha", 2, USDT="3000"), mode="shadow"), 3),
        seq(event(fill("t1", "buy", "1", "100"), mode="paper"), 4),
    ])

    def keyed(items: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        return [(i["mode"], i["session"], i["venue"], i["asset"], i["free"], i["source"])
                for i in items]

    body = (await client.get("/api/balances", params={"mode": "paper"})).json()
    assert keyed(body["items"]) == [
        ("paper", "s1", "alpha", "BTC", "2", "ledger"),
        ("paper", "s1", "alpha", "USDT", "900", "ledger"),
        ("paper", "s1", "beta", "USDT", "2000", "ledger"),
    ] and body["next"] is None
    live = (await client.get("/api/balances", params={"mode": "live"})).json()["items"]
    assert keyed(live) == [("live", "", "alpha", "USDT", "7", "venue"),
                           ("live", "", "beta", "USDT", "9", "venue")]
    assert live[0]["locked"] == "1" and live[0]["ts"] == "2024-01-01T00:01:00+00:00"
    usdt = await all_pages(client, "/api/balances", venue="alpha", asset="USDT", limit=1)
    assert keyed(usdt) == [("live", "", "alpha", "USDT", "7", "venue"),
                           ("paper", "s1", "alpha", "USDT", "900", "ledger"),
                           ("shadow", "s1", "alpha", "USDT", "3000", "ledger")]
    shadow = (await client.get("/api/balances", params={"mode": "shadow", "session": "s1"}))
    assert keyed(shadow.json()["items"]) == [("shadow", "s1", "alpha", "USDT", "3000", "ledger")]


@pytest.mark.parametrize(("params", "name"), [
    ({"mode": "demo"}, "mode"), ({"asset": "usdt"}, "asset"), ({"venue": "Alpha!"}, "venue"),
    ({"limit": "0"}, "limit"), ({"cursor": "WyJmaWxsIiwieCIsMV0"}, "cursor"),
])  # fmt: skip
async def test_api_balances_bad_parameters_answer_422_naming_them(
        client: httpx.AsyncClient, params: dict[str, str], name: str) -> None:
    r = await client.get("/api/balances", params=params)
    assert r.status_code == 422, r.text
    assert name in str(r.json()["detail"])


"""Book maintenance (Binance §1.6): property tests that diffs rebuild the final state, and that
missed events are detected as gaps."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from arb_market_data.book import (
    ApplyResult,
    BookSync,
    DepthSnapshot,
    DepthUpdate,
    L2Book,
    SnapshotResult,
)

Model = dict[str, dict[Decimal, Decimal]]

prices = st.integers(min_value=1, max_value=40).map(lambda i: Decimal(i) / 4)
qtys = st.sampled_from(["0", "0.000", "1", "2.5", "3.00", "7"]).map(Decimal)
changes = st.lists(st.tuples(st.sampled_from(["b", "a"]), prices, qtys), max_size=6)
events_st = st.lists(st.tuples(changes, st.integers(min_value=1, max_value=3)), min_size=1,
                     max_size=30)


def build(raw: list[tuple[list[tuple[str, Decimal, Decimal]], int]], start_id: int = 100):
    """Contiguous diff events (U = previous u + 1) and the model state after each one."""
    events: list[DepthUpdate] = []
    states: list[tuple[int, Model]] = [(start_id, {"b": {}, "a": {}})]
    model: Model = {"b": {}, "a": {}}
    last = start_id
    for levels, width in raw:
        bids = tuple((p, q) for side, p, q in levels if side == "b")
        asks = tuple((p, q) for side, p, q in levels if side == "a")
        ev = DepthUpdate("BTC-USDT", last + 1, last + width, bids, asks, event_ts=last)
        last += width
        for side, p, q in levels:
            if q == 0:
                model[side].pop(p, None)
            else:
                model[side][p] = q
        events.append(ev)
        states.append((last, {"b": dict(model["b"]), "a": dict(model["a"])}))
    return events, states


def snapshot(state: tuple[int, Model]) -> DepthSnapshot:
    last_id, model = state
    return DepthSnapshot(last_id, tuple(model["b"].items()), tuple(model["a"].items()))


def assert_book_is(book: L2Book | None, model: Model) -> None:
    assert book is not None
    assert book.bids == model["b"]
    assert book.asks == model["a"]
    bids, asks = book.top(20)
    assert bids == sorted(model["b"].items(), reverse=True)[:20]
    assert asks == sorted(model["a"].items())[:20]


@settings(max_examples=200, deadline=None)
@given(raw=events_st, data=st.data())
def test_applying_diffs_after_any_snapshot_equals_final_state(raw, data) -> None:  # type: ignore[no-untyped-def]
    events, states = build(raw)
    n = len(events)
    b = data.draw(st.integers(0, n - 1), label="first buffered event")
    s = data.draw(st.integers(0, n), label="snapshot taken after this many events")
    # The feed asks for a snapshot once the first event is buffered, so at least one is.
    m = data.draw(st.integers(b + 1, n), label="events buffered before the snapshot arrives")
    sync = BookSync("BTC-USDT")
    for ev in events[b:m]:
        assert sync.on_update(ev) is ApplyResult.BUFFERED
    result = sync.apply_snapshot(snapshot(states[s]))
    if s <= b:
        assert result is SnapshotResult.TOO_OLD  # lastUpdateId < first U: fetch again
        assert not sync.synced
        result = sync.apply_snapshot(snapshot(states[m]))
        s = m
    assert result is SnapshotResult.SYNCED
    for ev in events[m:]:
        expected = ApplyResult.STALE if ev.final_id <= states[s][0] else ApplyResult.APPLIED
        assert sync.on_update(ev) is expected
    assert_book_is(sync.book, states[-1][1])
    assert sync.book is not None and sync.book.update_id == states[-1][0]


@settings(max_examples=200, deadline=None)
@given(raw=events_st, data=st.data())
def test_a_missed_event_is_detected_as_a_gap_and_the_book_discarded(raw, data) -> None:  # type: ignore[no-untyped-def]
    events, states = build(raw)
    if len(events) < 2:
        return
    s = data.draw(st.integers(0, len(events) - 2), label="snapshot point")
    dropped = data.draw(st.integers(s, len(events) - 2), label="dropped event")
    sync = BookSync("BTC-USDT")
    assert sync.apply_snapshot(snapshot(states[s])) is SnapshotResult.SYNCED
    for ev in events[s:dropped]:
        assert sync.on_update(ev) is ApplyResult.APPLIED
    after = events[dropped + 1]
    assert sync.on_update(after) is ApplyResult.GAP
    assert not sync.synced
    assert sync.first_buffered_id == after.first_id  # the next sync starts from this event
    # Resync: a snapshot at the current state, then the stream continues.
    assert sync.apply_snapshot(snapshot(states[dropped + 2])) is SnapshotResult.SYNCED
    for ev in events[dropped + 2 :]:
        assert sync.on_update(ev) is ApplyResult.APPLIED
    assert_book_is(sync.book, states[-1][1])


def test_gap_inside_the_buffer_is_reported_when_the_snapshot_is_applied() -> None:
    events, states = build([([("b", Decimal(1), Decimal(1))], 1)] * 5)
    sync = BookSync("BTC-USDT")
    for ev in (events[0], events[1], events[3], events[4]):  # events[2] lost
        sync.on_update(ev)
    assert sync.apply_snapshot(snapshot(states[1])) is SnapshotResult.GAP
    assert not sync.synced
    assert [e.first_id for e in sync.buffer] == [events[3].first_id, events[4].first_id]


def test_zero_quantity_removes_level_and_unknown_removal_is_harmless() -> None:
    book = L2Book()
    book.apply_levels([(Decimal("10"), Decimal("1"))], [(Decimal("11"), Decimal("2"))])
    book.apply_levels([(Decimal("10.0"), Decimal("0.00")), (Decimal("9"), Decimal("0"))], [])
    assert book.bids == {}
    assert book.top(5) == ([], [(Decimal("11"), Decimal("2"))])


def test_buffer_is_bounded_and_keeps_the_newest_events() -> None:
    events, _ = build([([], 1)] * 10)
    sync = BookSync("BTC-USDT", max_buffer=3)
    for ev in events:
        sync.on_update(ev)
    assert [e.final_id for e in sync.buffer] == [e.final_id for e in events[-3:]]


_level = st.tuples(st.integers(1, 40).map(lambda i: Decimal(i) / 4),
                   st.sampled_from([Decimal(0), Decimal("0.0"), Decimal("1.5"), Decimal(3)]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(_level, max_size=6), st.lists(_level, max_size=6)),
                max_size=30),
       st.integers(0, 25))
def test_top_matches_a_full_sort_after_any_diffs(diffs, n) -> None:  # type: ignore[no-untyped-def]
    book = L2Book()
    for bids, asks in diffs:
        book.apply_levels(bids, asks)
    bids, asks = book.top(n)
    assert bids == [(p, book.bids[p]) for p in sorted(book.bids, reverse=True)[:n]]
    assert asks == [(p, book.asks[p]) for p in sorted(book.asks)[:n]]
    assert book.crossed == (bool(book.bids and book.asks) and max(book.bids) >= min(book.asks))

"""Price model, books and the depth-diff sequence (in-process, simulated time)."""

from __future__ import annotations

import json
from decimal import Decimal

from arb_venue_sim.binance_ws import Connection, parse_stream
from arb_venue_sim.market import Market
from arb_venue_sim.matching import OrderRequest
from arb_venue_sim.venue import Simulator

D = Decimal


def _subscribe(sim: Simulator, venue: str, *streams: str) -> Connection:
    hub = sim.venues[venue].hub
    conn = Connection(ws=None, combined=True, queue_max=100_000)  # type: ignore[arg-type]
    for name in streams:
        key = parse_stream(name, hub.known)
        assert key is not None
        conn.streams[name] = key
    hub.conns.add(conn)
    return conn


def _drain(conn: Connection) -> list[dict]:
    out = []
    while not conn.queue.empty():
        text = conn.queue.get_nowait()
        assert text is not None
        out.append(json.loads(text))
    return out


def test_diffs_are_contiguous_and_rebuild_the_book_from_a_snapshot(sim: Simulator) -> None:
    venue = sim.venues["alpha"]
    book = sim.market.book("alpha", "BTCUSDT")
    conn = _subscribe(sim, "alpha", "btcusdt@depth@100ms")
    sim.tick(1 / 15)
    venue.hub.flush()
    first = _drain(conn)  # buffered before the snapshot, as a client would
    snapshot_id = book.update_id
    local = {"b": dict(book.levels("bids", 1000)), "a": dict(book.levels("asks", 1000))}
    for i in range(300):
        sim.tick(1 / 15)
        if i % 7 == 0:  # our own taker orders also change the book
            venue.engine.place(OrderRequest(symbol="BTCUSDT", side="BUY" if i % 2 else "SELL",
                                            type="MARKET", quantity=D("0.05")))
        if i % 2 == 0:
            venue.hub.flush()
    venue.hub.flush()
    frames = first + _drain(conn)
    prev_u = None
    applied = 0
    for frame in frames:
        assert frame["stream"] == "btcusdt@depth@100ms"
        data = frame["data"]
        assert list(data) == ["e", "E", "s", "U", "u", "b", "a"]
        assert data["e"] == "depthUpdate" and data["s"] == "BTCUSDT"
        if prev_u is not None:
            assert data["U"] == prev_u + 1
        prev_u = data["u"]
        if data["u"] <= snapshot_id:
            continue
        for side in ("b", "a"):
            for price, qty in data[side]:
                if D(qty) == 0:
                    local[side].pop(D(price), None)
                else:
                    local[side][D(price)] = D(qty)
        applied += 1
    assert applied > 50
    assert prev_u == book.update_id
    assert sorted(local["b"].items(), reverse=True) == book.levels("bids", 1000)
    assert sorted(local["a"].items()) == book.levels("asks", 1000)


def test_books_keep_twenty_plus_levels_on_the_tick_grid(sim: Simulator) -> None:
    for _ in range(200):
        sim.tick(1 / 15)
    for (_, wire), book in sim.market.books.items():
        spec = sim.market.by_wire[wire]
        bids, asks = book.levels("bids"), book.levels("asks")
        assert len(bids) >= 20 and len(asks) >= 20
        assert bids[0][0] < asks[0][0]
        for price, qty in bids + asks:
            assert price % spec.tick_size == 0 and qty % spec.step_size == 0 and qty > 0
        mid = (bids[0][0] + asks[0][0]) / 2
        assert abs(mid / spec.start_price - 1) < D("0.2")


def test_same_seed_gives_the_same_market() -> None:
    def run(seed: int) -> list:
        m = Market(["alpha", "beta"], ["BTC-USDT", "ETH-USDT"], seed=seed)
        for _ in range(100):
            m.step(0.1)
        return [b.levels("bids", 5) for b in m.books.values()]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_cross_venue_spread_beats_fees_every_few_seconds() -> None:
    """An executable spread > 2 x 10 bps taker fees + 5 bps shows up every few seconds."""
    m = Market(["alpha", "beta"], ["BTC-USDT", "ETH-USDT", "SOL-USDT"], seed=3)
    dt, seconds = 1 / 15, 120
    episodes, was_open = 0, {s: False for s in m.specs}
    for _ in range(int(seconds / dt)):
        m.step(dt)
        for symbol, spec in m.specs.items():
            a, b = m.book("alpha", spec.wire), m.book("beta", spec.wire)
            edge = max((b.best("bids")[0] - a.best("asks")[0]) / a.best("asks")[0],
                       (a.best("bids")[0] - b.best("asks")[0]) / b.best("asks")[0])
            is_open = edge > D("0.0025")
            episodes += is_open and not was_open[symbol]
            was_open[symbol] = is_open
    assert seconds / episodes < 5, episodes


def test_symbols_flush_in_their_own_phase_once_per_100ms(sim: Simulator) -> None:
    """The hub's loop flushes one slot every 10 ms: each symbol once per 10 slots, the
    symbols of one venue spread over different slots (not all in the same millisecond)."""
    from arb_venue_sim.binance_ws import SLOTS

    hub = sim.venues["alpha"].hub
    symbols = sorted(hub.known)
    conn = _subscribe(sim, "alpha", *(f"{s.lower()}@depth@100ms" for s in symbols))
    seen: list[set[str]] = []
    for slot in range(SLOTS * 3):
        sim.tick(0.01)
        hub.flush_slot(slot % SLOTS)
        seen.append({f["data"]["s"] for f in _drain(conn)})
    for symbol in symbols:
        slots = [i for i, names in enumerate(seen) if symbol in names]
        assert len(slots) == 3 and slots[1] - slots[0] == slots[2] - slots[1] == SLOTS, slots
    assert max(len(names) for names in seen) < len(symbols)  # never all at once
    other = sim.venues["beta"].hub
    assert other._slots != hub._slots  # the venues' phases differ too


def test_the_market_ticks_in_groups_every_symbol_once_per_interval(sim: Simulator) -> None:
    groups = sim.tick_groups()
    flat = [s for g in groups for s in g]
    assert sorted(flat) == sorted(sim.market.models) and len(flat) == len(set(flat))
    books = {s: sim.market.book("alpha", sim.market.specs[s].wire) for s in flat}
    before = {s: b.update_id for s, b in books.items()}
    sim.tick(0.05, groups[0])
    moved = {s for s, b in books.items() if b.update_id != before[s]}
    assert moved <= set(groups[0]) and moved  # only the group's books moved

"""Local L2 order book kept in sync with a venue's diff-depth stream.

Pure data structures, no I/O, so the sync procedure can be property-tested. The procedure is
Binance spot's "maintaining a local order book" (protocol reference §1.6):

1. buffer diff events until a REST snapshot arrives (remember the first event's ``U``);
2. a snapshot whose ``lastUpdateId`` is older than that first ``U`` is useless: fetch again;
3. drop buffered events with ``u <= lastUpdateId``; apply the rest, then every new event;
4. an event with ``u <= local id`` is old and ignored; one with ``U > local id + 1`` means
   events were missed: the book is discarded and the sync starts over (a *gap*).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from arb_common.messages import Level


@dataclass(frozen=True, slots=True)
class DepthUpdate:
    """One diff-depth event, already parsed into Decimals."""

    symbol: str  # our symbol, e.g. BTC-USDT
    first_id: int  # U
    final_id: int  # u
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_ts: int = 0  # E, venue event time in ms
    recv_ts: int = 0  # when the frame arrived, ns


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


class ApplyResult(Enum):
    APPLIED = "applied"  # the book changed and is in sync
    BUFFERED = "buffered"  # waiting for a snapshot
    STALE = "stale"  # older than the book; ignored
    GAP = "gap"  # events were missed: book discarded, sync restarts


class SnapshotResult(Enum):
    SYNCED = "synced"
    TOO_OLD = "too_old"  # lastUpdateId < first buffered U: fetch another snapshot
    GAP = "gap"  # the buffered events do not continue the snapshot: sync restarts


@dataclass
class L2Book:
    """Price -> quantity on each side; a zero quantity removes the level.

    Each side also keeps its prices in a sorted list, updated only for the levels a diff
    touches (a bisect each), so :meth:`top` is a slice instead of a heap pass over the whole
    side on every frame. Change the book through :meth:`apply_levels` only.
    """

    update_id: int = 0
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    _bid_prices: list[Decimal] = field(default_factory=list, repr=False)  # ascending
    _ask_prices: list[Decimal] = field(default_factory=list, repr=False)  # ascending

    def __post_init__(self) -> None:
        self._bid_prices = sorted(self.bids)
        self._ask_prices = sorted(self.asks)

    @classmethod
    def from_snapshot(cls, snap: DepthSnapshot) -> L2Book:
        book = cls(update_id=snap.last_update_id)
        book.apply_levels(snap.bids, snap.asks)
        return book

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for side, prices, levels in ((self.bids, self._bid_prices, bids),
                                     (self.asks, self._ask_prices, asks)):
            for price, qty in levels:
                if qty == 0:
                    if side.pop(price, None) is not None:  # removing an unknown level is normal
                        del prices[bisect_left(prices, price)]
                else:
                    if price not in side:
                        insort(prices, price)
                    side[price] = qty

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """Best ``n`` levels per side, best first (bids descending, asks ascending)."""
        bids, asks = self.bids, self.asks
        return (
            [(p, bids[p]) for p in reversed(self._bid_prices[-n:])] if n > 0 else [],
            [(p, asks[p]) for p in self._ask_prices[:n]] if n > 0 else [],
        )

    @property
    def crossed(self) -> bool:
        return bool(self._bid_prices and self._ask_prices) and (
            self._bid_prices[-1] >= self._ask_prices[0])


class BookSync:
    """One symbol's book through the buffer → snapshot → diffs procedure."""

    def __init__(self, symbol: str, *, max_buffer: int = 10_000) -> None:
        self.symbol = symbol
        self.max_buffer = max_buffer
        self.book: L2Book | None = None
        self.buffer: list[DepthUpdate] = []
        self.last_event_ts = 0
        self.last_recv_ts = 0

    @property
    def synced(self) -> bool:
        return self.book is not None

    @property
    def first_buffered_id(self) -> int | None:
        return self.buffer[0].first_id if self.buffer else None

    def reset(self) -> None:
        """Forget the book and the buffer (new connection)."""
        self.book = None
        self.buffer.clear()
        self.last_event_ts = self.last_recv_ts = 0

    def on_update(self, ev: DepthUpdate) -> ApplyResult:
        if self.book is None:
            self._buffer(ev)
            return ApplyResult.BUFFERED
        return self._apply(self.book, ev)

    def apply_snapshot(self, snap: DepthSnapshot) -> SnapshotResult:
        first = self.first_buffered_id
        if first is not None and snap.last_update_id < first:
            return SnapshotResult.TOO_OLD
        book = L2Book.from_snapshot(snap)
        self.book = book
        self.last_event_ts = self.last_recv_ts = 0
        pending, self.buffer = self.buffer, []
        for i, ev in enumerate(pending):
            if ev.final_id <= snap.last_update_id:
                continue
            if self._apply(book, ev) is ApplyResult.GAP:
                self.buffer.extend(pending[i + 1 :])
                return SnapshotResult.GAP
        return SnapshotResult.SYNCED

    def _buffer(self, ev: DepthUpdate) -> None:
        self.buffer.append(ev)
        if len(self.buffer) > self.max_buffer:
            # Snapshot is very late: keep the newest events; an old snapshot is then refused
            # (TOO_OLD) and a newer one fetched.
            del self.buffer[: len(self.buffer) - self.max_buffer]

    def _apply(self, book: L2Book, ev: DepthUpdate) -> ApplyResult:
        if ev.final_id <= book.update_id:
            return ApplyResult.STALE
        if ev.first_id > book.update_id + 1:
            self.book = None
            self.buffer = [ev]  # the event that revealed the gap starts the next sync
            return ApplyResult.GAP
        book.apply_levels(ev.bids, ev.asks)
        book.update_id = ev.final_id
        self.last_event_ts = ev.event_ts
        self.last_recv_ts = ev.recv_ts
        return ApplyResult.APPLIED


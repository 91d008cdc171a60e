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

import heapq
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
    """Price -> quantity on each side; a zero quantity removes the level."""

    update_id: int = 0
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, snap: DepthSnapshot) -> L2Book:
        book = cls(update_id=snap.last_update_id)
        book.apply_levels(snap.bids, snap.asks)
        return book

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if qty == 0:
                    side.pop(price, None)  # removing an unknown level is normal
                else:
                    side[price] = qty

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """Best ``n`` levels per side, best first (bids descending, asks ascending)."""
        bid_prices = heapq.nlargest(n, self.bids)
        ask_prices = heapq.nsmallest(n, self.asks)
        return (
            [(p, self.bids[p]) for p in bid_prices],
            [(p, self.asks[p]) for p in ask_prices],
        )

    @property
    def crossed(self) -> bool:
        return bool(self.bids and self.asks) and max(self.bids) >= min(self.asks)


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


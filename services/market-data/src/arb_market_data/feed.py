"""One venue's depth feed: WebSocket session, per-symbol book sync, reconnect with backoff.

The wire format is the dialect module's business (``exchanges/binance.py``); the sync procedure
is ``book.py``'s. This module does the I/O: it reads frames, fetches REST snapshots when a
symbol needs (re)syncing, and hands every in-sync book state to ``on_book``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect

from arb_common.errors import DecodeError
from arb_common.messages import Book, VenueStatus
from arb_common.venues import VenueConfig

from .book import ApplyResult, BookSync, DepthUpdate, SnapshotResult
from .config import MarketDataSettings
from .exchanges import binance
from .metrics import (
    BAD_FRAMES,
    BOOKS_PUBLISHED,
    CONNECTED,
    FEED_LAG,
    FRAMES,
    GAPS,
    RECONNECTS,
    RESYNCS,
)

logger = logging.getLogger(__name__)

BookSink = Callable[[Book], Awaitable[None]]
StatusSink = Callable[[VenueStatus], Awaitable[None]]

# A connection that lived this long resets the backoff.
_HEALTHY_SESSION_S = 30.0


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random."""
    ceiling: float = min(maximum, initial * (2.0 ** min(attempt, 30)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class VenueFeed:
    def __init__(
        self,
        venue: VenueConfig,
        symbols: list[str],
        settings: MarketDataSettings,
        *,
        on_book: BookSink,
        on_status: StatusSink,
    ) -> None:
        if venue.dialect != "binance":
            raise ValueError(f"venue {venue.id}: unsupported dialect {venue.dialect!r}")
        self.venue = venue
        self.symbols = list(symbols)
        self.settings = settings
        self.on_book = on_book
        self.on_status = on_status
        self.syncs = {s: BookSync(s) for s in symbols}
        self.wire = {binance.wire_symbol(s): s for s in symbols}
        self.connected = False
        self.last_book_mono: dict[str, float] = {}
        self.started_mono = time.monotonic()
        self._resyncs: dict[str, asyncio.Task[None]] = {}
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------ connection loop
    async def run(self) -> None:
        """Connect, read, reconnect forever (until cancelled)."""
        attempt = 0
        try:
            while True:
                started = time.monotonic()
                reason = "closed by venue"
                try:
                    await self._session()
                except asyncio.CancelledError:
                    reason = "shutdown"
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure means reconnect
                    reason = repr(exc)[:200]
                    logger.warning("ws session ended venue=%s error=%s", self.venue.id, reason)
                finally:
                    await self._disconnected(reason)
                if time.monotonic() - started > _HEALTHY_SESSION_S:
                    attempt = 0
                delay = backoff_delay(
                    attempt, self.settings.reconnect_initial_s, self.settings.reconnect_max_s
                )
                attempt += 1
                RECONNECTS.labels(self.venue.id).inc()
                logger.info("reconnecting venue=%s in=%.2fs attempt=%d", self.venue.id, delay,
                            attempt)
                await asyncio.sleep(delay)
        finally:
            if self._http is not None:
                await self._http.aclose()
                self._http = None

    async def _session(self) -> None:
        url = binance.stream_url(self.venue.ws_url, self.symbols)
        async with connect(
            url, open_timeout=self.settings.ws_open_timeout_s, proxy=None, max_size=2**24
        ) as ws:
            for sync in self.syncs.values():
                sync.reset()
            if not binance.uses_combined_url(self.venue.ws_url):
                await ws.send(binance.subscribe_message(self.symbols, 1))
            self.connected = True
            CONNECTED.labels(self.venue.id).set(1)
            logger.info("ws connected venue=%s url=%s", self.venue.id, url)
            await self._status(True, "connected")
            async for raw in ws:
                await self.handle_frame(raw, time.time_ns())

    async def _disconnected(self, reason: str) -> None:
        for task in self._resyncs.values():
            task.cancel()
        self._resyncs.clear()
        for sync in self.syncs.values():
            sync.reset()
        if self.connected:
            self.connected = False
            CONNECTED.labels(self.venue.id).set(0)
            logger.warning("ws disconnected venue=%s reason=%s", self.venue.id, reason)
            await self._status(False, reason)

    async def _status(self, connected: bool, reason: str) -> None:
        try:
            await self.on_status(VenueStatus(venue=self.venue.id, connected=connected,
                                             reason=reason))
        except Exception as exc:  # noqa: BLE001 - status is informative; the feed goes on
            logger.error("status publish failed venue=%s error=%r", self.venue.id, exc)

    # ------------------------------------------------------------ frames
    async def handle_frame(self, raw: str | bytes, recv_ts: int) -> None:
        """Decode one frame and advance the symbol's book; malformed frames are counted."""
        FRAMES.labels(self.venue.id).inc()
        try:
            msg = binance.parse_frame(raw, self.wire, recv_ts)
        except DecodeError as exc:
            BAD_FRAMES.labels(self.venue.id).inc()
            logger.warning("bad frame venue=%s reason=%s frame=%.160r", self.venue.id,
                           exc.reason, raw)
            return
        if isinstance(msg, dict):
            self._control(msg)
            return
        if msg.event_ts:
            FEED_LAG.labels(self.venue.id).observe(max(0.0, recv_ts / 1e9 - msg.event_ts / 1e3))
        await self._on_update(msg)

    def _control(self, msg: dict[str, Any]) -> None:
        if msg.get("e") == "serverShutdown":
            logger.warning("venue announced shutdown venue=%s", self.venue.id)
        elif msg.get("result") is not None:
            logger.info("ws reply venue=%s msg=%s", self.venue.id, msg)

    async def _on_update(self, ev: DepthUpdate) -> None:
        sync = self.syncs[ev.symbol]
        local = sync.book.update_id if sync.book is not None else None
        result = sync.on_update(ev)
        if result is ApplyResult.APPLIED:
            await self._publish(sync)
        elif result is ApplyResult.BUFFERED:
            self._ensure_resync(ev.symbol)
        elif result is ApplyResult.GAP:
            self._gap(ev.symbol, f"local_id={local} U={ev.first_id} u={ev.final_id}")
            self._ensure_resync(ev.symbol)

    def _gap(self, symbol: str, detail: str) -> None:
        GAPS.labels(self.venue.id, symbol).inc()
        logger.warning("sequence gap venue=%s symbol=%s %s: resyncing", self.venue.id, symbol,
                       detail)

    # ------------------------------------------------------------ snapshots
    def _ensure_resync(self, symbol: str) -> None:
        task = self._resyncs.get(symbol)
        if task is None or task.done():
            self._resyncs[symbol] = asyncio.create_task(
                self._resync(symbol), name=f"resync:{self.venue.id}:{symbol}"
            )

    async def _resync(self, symbol: str) -> None:
        sync = self.syncs[symbol]
        while not sync.synced:
            try:
                snap = await self._fetch_snapshot(symbol)
            except (httpx.HTTPError, DecodeError) as exc:
                logger.warning("snapshot failed venue=%s symbol=%s error=%r", self.venue.id,
                               symbol, exc)
                await asyncio.sleep(self.settings.snapshot_retry_s)
                continue
            result = sync.apply_snapshot(snap)
            if result is SnapshotResult.SYNCED:
                logger.info("book synced venue=%s symbol=%s id=%d", self.venue.id, symbol,
                            sync.book.update_id if sync.book else -1)
                await self._publish(sync)
                return
            if result is SnapshotResult.GAP:
                self._gap(symbol, f"snapshot lastUpdateId={snap.last_update_id}")
            else:
                logger.info("snapshot older than stream venue=%s symbol=%s lastUpdateId=%d "
                            "first_U=%s: refetching", self.venue.id, symbol,
                            snap.last_update_id, sync.first_buffered_id)
            await asyncio.sleep(self.settings.snapshot_retry_s / 5)

    async def _fetch_snapshot(self, symbol: str) -> Any:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0, trust_env=False)
        url = binance.snapshot_url(self.venue.rest_url, symbol, self.settings.snapshot_limit)
        RESYNCS.labels(self.venue.id, symbol).inc()
        resp = await self._http.get(url)
        if resp.status_code != 200:
            raise httpx.HTTPStatusError(f"status {resp.status_code}: {resp.text[:200]}",
                                        request=resp.request, response=resp)
        return binance.parse_snapshot(resp.content)

    # ------------------------------------------------------------ output
    async def _publish(self, sync: BookSync) -> None:
        book = sync.book
        if book is None:
            return
        bids, asks = book.top(self.settings.book_levels)
        out = Book(
            venue=self.venue.id,
            symbol=sync.symbol,
            seq=book.update_id,
            bids=bids,
            asks=asks,
            venue_ts=sync.last_event_ts,
            recv_ts=sync.last_recv_ts or time.time_ns(),
        )
        try:
            await self.on_book(out)
        except Exception as exc:  # noqa: BLE001 - NATS trouble must not kill the venue feed
            logger.error("book publish failed venue=%s symbol=%s error=%r", self.venue.id,
                         sync.symbol, exc)
            return
        BOOKS_PUBLISHED.labels(self.venue.id, sync.symbol).inc()
        self.last_book_mono[sync.symbol] = time.monotonic()

    def book_age(self, symbol: str) -> float:
        last = self.last_book_mono.get(symbol, self.started_mono)
        return time.monotonic() - last

    def fresh(self, symbol: str, stale_after_s: float) -> bool:
        """In sync on a live connection and published within ``stale_after_s``."""
        return (self.connected and self.syncs[symbol].synced
                and symbol in self.last_book_mono and self.book_age(symbol) < stale_after_s)

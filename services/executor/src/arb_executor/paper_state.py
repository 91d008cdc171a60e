"""Paper venues that survive a restart: the EXEC stream is their log.

A paper venue holds its orders and balances in memory. After a crash they are rebuilt from
what the executor itself published (no other store): every ``exec.order.*.*`` /
``exec.fill.*.*`` event of THIS mode and session (envelope ``mode`` / ``session``), read in
stream order from the first sequence, before the executor consumes any intent:

- an :class:`~arb_common.messages.OrderEvent` with a venue-side status (ACKED,
  PARTIALLY_FILLED, FILLED, EXPIRED, CANCELED) gives the order by client order id (status,
  filled quantity, venue order id), so a redelivered intent finds it and never fills twice;
- a :class:`~arb_common.messages.FillEvent` gives the fill (appended to its order) and moves
  the balances from the configured start balances, once per trade id.

A fill computed but never published (crash before its events) is forgotten, as it should be:
the redelivered intent fills anew, exactly once in the ledger. Events of other sessions and
modes, and of venues not configured here, are ignored.

The follower keeps running after the replay, so corrections published by others (the
reconciler) reach the venue too; the venue's own fills come back the same way and are skipped
by trade id (it applied them when it filled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.errors import TemporaryError
from arb_common.follow import Follower
from arb_common.messages import Envelope, FillEvent, OrderEvent
from arb_common.venues import VenueConfig

from .config import ExecutorSettings
from .paper import BookCache, PaperVenue
from .venue_client import MarketRules

logger = logging.getLogger(__name__)


class PaperReplay:
    """Routes this mode+session's EXEC events to the paper venues (a follower's handler)."""

    def __init__(self, venues: Mapping[str, PaperVenue], *, mode: str, session: str) -> None:
        self.venues = venues
        self.mode = mode
        self.session = session
        self.orders = 0  # events that changed an order
        self.fills = 0  # fills applied
        self.ignored = 0  # other session / mode / venue
        self.follower: Follower | None = None

    async def on_event(self, _seq: int, env: Envelope, payload: Any) -> None:
        if env.mode != self.mode or env.session != self.session:
            self.ignored += 1
            return
        venue = self.venues.get(getattr(payload, "venue", ""))
        if venue is None:
            self.ignored += 1
            return
        if isinstance(payload, FillEvent):
            self.fills += venue.record_fill(payload)
        elif isinstance(payload, OrderEvent):
            self.orders += venue.record_order(payload)

    async def start(self, bus: Bus, *, timeout_s: float = 120.0) -> None:
        """Replay everything stored, then keep following; returns once caught up."""
        self.follower = bus.follow(stream="EXEC", filter_subject=None, start_seq=1,
                                   handler=self.on_event, name="paper-venues")
        try:
            await asyncio.wait_for(self.follower.caught_up.wait(), timeout=timeout_s)
        except TimeoutError:
            raise TemporaryError(f"paper venues: EXEC replay not caught up after "
                                 f"{timeout_s:g} s (at seq {self.follower.last_seq})") from None
        for venue in self.venues.values():
            venue.finish_replay()
        logger.info("paper venues rebuilt mode=%s session=%s orders=%d fills=%d ignored=%d "
                    "last_seq=%d", self.mode, self.session, self.orders, self.fills,
                    self.ignored, self.follower.last_seq)


def make_paper_venues(
    books: BookCache,
    settings: ExecutorSettings,
    venue_cfgs: Mapping[str, VenueConfig],
    rules: Mapping[str, Mapping[str, MarketRules]],
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, PaperVenue]:
    """One paper venue per configured venue, at its start balances (nothing replayed)."""
    venues: dict[str, PaperVenue] = {}
    for v in settings.venue_list:
        cfg = venue_cfgs.get(v)
        vrules = dict(rules.get(v) or {})
        venues[v] = PaperVenue(
            v, books,
            taker_fee=cfg.taker_fee if cfg else settings.paper_taker_fee,
            maker_fee=cfg.maker_fee if cfg else settings.paper_maker_fee,
            rules=vrules,
            # exchangeInfo known: what the venue lists; else the configured symbols.
            symbols=list(vrules) if vrules else settings.symbol_list,
            default_rules=(settings.paper_lot_step, settings.paper_min_qty,
                           settings.paper_min_notional),
            clock=clock,
            balances=settings.paper_balances_for(v),
            latency_ms=settings.paper_latency_ms,
            book_stale_s=settings.paper_book_stale_s,
            mode=settings.mode.value,
        )
    return venues


async def build_paper_venues(
    bus: Bus,
    settings: ExecutorSettings,
    venue_cfgs: Mapping[str, VenueConfig],
    rules: Mapping[str, Mapping[str, MarketRules]],
    *,
    clock: Clock = SYSTEM_CLOCK,
    books: BookCache | None = None,
    replay_timeout_s: float = 120.0,
) -> dict[str, PaperVenue]:
    """Paper venues ready to trade: books subscribed, orders and balances replayed from EXEC.

    ``books``: a cache the caller already feeds from ``md.book.*.*`` (else one is made and
    subscribed here). Call before consuming intents. Raises :class:`TemporaryError` when the
    replay does not catch up within ``replay_timeout_s`` (the service exits and is restarted).
    """
    if books is None:
        books = BookCache(clock)
        await bus.subscribe(bus.subjects.any("md.book.*.*"), books.on_book, where="md.book")
    venues = make_paper_venues(books, settings, venue_cfgs, rules, clock=clock)
    replay = PaperReplay(venues, mode=settings.mode.value, session=settings.session)
    await replay.start(bus, timeout_s=replay_timeout_s)
    for v, venue in venues.items():
        logger.info("paper venue ready venue=%s mode=%s orders=%d balances=%s", v, venue.mode,
                    len(venue.orders),
                    ",".join(f"{a}={b}" for a, b in sorted(venue.balances().items())))
    return venues

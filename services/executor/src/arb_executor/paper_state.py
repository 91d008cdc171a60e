"""Paper venues that survive a restart: the EXEC stream is their log.

A paper venue holds its orders and balances in memory. After a crash they are rebuilt from
what the executor itself published (no other store): every ``exec.order.*.*`` /
``exec.fill.*.*`` event of THIS mode and session (envelope ``mode`` / ``session``), read in
stream order from the first sequence, before the executor consumes any intent:

- an :class:`~arb_common.messages.OrderEvent` with a venue-side status (ACKED,
  PARTIALLY_FILLED, FILLED, EXPIRED, CANCELED) gives the order by client order id (status,
  filled quantity, venue order id), so a redelivered intent finds it and never fills twice;
- a :class:`~arb_common.messages.FillEvent` gives the fill (appended to its order) and moves
  the balances, once per trade id;
- a :class:`~arb_common.messages.BalanceSnapshot` sets the balances (fills after it move them
  on); before the first one, they start from the configured start balances.

Once rebuilt, the venues' balances are published as one snapshot per venue
(:func:`publish_balances`), anchored right after the last event they include: that is how the
session's start balances (and, in shadow, the live account's) reach the ledger, which folds
EXEC the same way (``arb_state.ingest``), so the ledger's paper balances and the executor's
agree after any restart. A later session start (or config change) keeps the session's
account: its last snapshot wins over ``ARB_PAPER_BALANCES``. A venue whose replay is not the
whole story is not published (logged; the ledger keeps its account): EXEC no longer holds
its first events (retention) and none of its snapshots, yet it holds fills of it.

A fill computed but never published (crash before its events) is forgotten, as it should be:
the redelivered intent fills anew, exactly once in the ledger. Events of other sessions and
modes, and of venues not configured here, are ignored.

The follower keeps running after the replay, so corrections published by others (the
reconciler) reach the venue too; the venue's own fills come back the same way and are skipped
by trade id (it applied them when it filled). Balance snapshots are only applied while
replaying (our own, coming back, describe a state already left behind).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from arb_common.bus import Bus, LastSequenceMismatch
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.errors import TemporaryError
from arb_common.follow import Follower
from arb_common.messages import BalanceSnapshot, Envelope, FillEvent, OrderEvent
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
        self.snapshots = 0  # balance snapshots applied
        self.replaying = True
        self.follower: Follower | None = None
        self.first_seq: int | None = None  # the first EXEC sequence replayed (1: all of it)
        self.filled: set[str] = set()  # venues with fills of this session replayed
        self.anchored: set[str] = set()  # venues with a balance snapshot replayed

    def partial(self) -> set[str]:
        """Venues whose replayed balances may miss fills: EXEC lost its first events and
        holds no snapshot of them (their fills after it do not make an account)."""
        if self.first_seq is None or self.first_seq <= 1:
            return set()
        return self.filled - self.anchored

    async def on_event(self, seq: int, env: Envelope, payload: Any) -> None:
        if self.first_seq is None:
            self.first_seq = seq
        if env.mode != self.mode or env.session != self.session:
            self.ignored += 1
            return
        venue = self.venues.get(getattr(payload, "venue", ""))
        if venue is None:
            self.ignored += 1
            return
        if isinstance(payload, FillEvent):
            self.fills += venue.record_fill(payload)
            if self.replaying and payload.venue not in self.anchored:
                self.filled.add(payload.venue)
        elif isinstance(payload, OrderEvent):
            self.orders += venue.record_order(payload)
        elif isinstance(payload, BalanceSnapshot) and self.replaying:
            venue.set_balances(payload.balances)
            self.snapshots += 1
            self.anchored.add(payload.venue)

    async def start(self, bus: Bus, *, timeout_s: float = 120.0) -> None:
        """Replay everything stored, then keep following; returns once caught up."""
        self.follower = bus.follow(stream="EXEC", filter_subject=None, start_seq=1,
                                   handler=self.on_event, name="paper-venues")
        try:
            await asyncio.wait_for(self.follower.caught_up.wait(), timeout=timeout_s)
        except TimeoutError:
            raise TemporaryError(f"paper venues: EXEC replay not caught up after "
                                 f"{timeout_s:g} s (at seq {self.follower.last_seq})") from None
        self.replaying = False
        for venue in self.venues.values():
            venue.finish_replay()
        logger.info("paper venues rebuilt mode=%s session=%s orders=%d fills=%d "
                    "balance_snapshots=%d ignored=%d last_seq=%d", self.mode, self.session,
                    self.orders, self.fills, self.snapshots, self.ignored,
                    self.follower.last_seq)


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


async def publish_balances(bus: Bus, venues: Mapping[str, PaperVenue], follower: Follower,
                           *, attempts: int = 50, settle_s: float = 1.0) -> list[int]:
    """One :class:`BalanceSnapshot` per venue (its :meth:`PaperVenue.stream_balances`), each
    stored only right after the last EXEC event it includes (``expected_last_seq``): if
    anything else landed first, the follower applies it and the snapshot is taken again.
    Sequences the follower is not handed within ``settle_s`` hold no message any more
    (expired, deleted): they are skipped. Returns the snapshots' stream sequences; raises
    :class:`TemporaryError` after ``attempts`` tries of one venue (the service exits and is
    restarted)."""
    seqs: list[int] = []
    floor = 0  # our last snapshot (the follower may not have it yet), or a sequence skipped
    for vid, venue in sorted(venues.items()):
        for _ in range(attempts):
            as_of = max(follower.last_seq, floor)
            snap = BalanceSnapshot(venue=vid, balances=venue.stream_balances(), as_of_seq=as_of)
            msg_id = f"balance:{bus.mode}:{bus.session}:{vid}:{as_of}"
            try:
                ack = await bus.publish(bus.subjects.balance(vid), snap, msg_id,
                                        expected_last_seq=as_of)
            except LastSequenceMismatch as exc:
                floor = max(floor, await _settle(follower, exc.last_seq, settle_s))
                continue
            floor = ack.seq
            seqs.append(ack.seq)
            logger.info("paper balances published venue=%s mode=%s session=%s seq=%d "
                        "balances=%s", vid, bus.mode, bus.session, ack.seq,
                        ",".join(f"{a}={b}" for a, b in sorted(snap.balances.items())))
            break
        else:
            raise TemporaryError(f"paper balances of {vid}: EXEC kept moving past the "
                                 f"follower ({attempts} tries)")
    return seqs


async def _settle(follower: Follower, last_seq: int | None, settle_s: float) -> int:
    """Wait until the follower was handed ``last_seq`` (the stream's end); past ``settle_s``
    the sequences it was not handed hold nothing: returns ``last_seq`` to skip them."""
    if last_seq is None:
        await asyncio.sleep(0.05)
        return 0
    deadline = asyncio.get_running_loop().time() + settle_s
    while follower.last_seq < last_seq:
        if asyncio.get_running_loop().time() > deadline:
            logger.warning("EXEC sequences %d..%d hold no message (expired or deleted); "
                           "balances anchored after them", follower.last_seq + 1, last_seq)
            return last_seq
        await asyncio.sleep(0.01)
    return 0


async def build_paper_venues(
    bus: Bus,
    settings: ExecutorSettings,
    venue_cfgs: Mapping[str, VenueConfig],
    rules: Mapping[str, Mapping[str, MarketRules]],
    *,
    clock: Clock = SYSTEM_CLOCK,
    books: BookCache | None = None,
    replay_timeout_s: float = 120.0,
    prepare: Callable[[dict[str, PaperVenue]], Awaitable[None]] | None = None,
) -> dict[str, PaperVenue]:
    """Paper venues ready to trade: books subscribed, orders and balances replayed from EXEC,
    ``prepare`` run (shadow: the live account's balances), balances published.

    ``books``: a cache the caller already feeds from ``md.book.*.*`` (else one is made and
    subscribed here). Call before consuming intents. Raises :class:`TemporaryError` when the
    replay does not catch up within ``replay_timeout_s`` (the service exits and is restarted).
    """
    if books is None:
        books = BookCache(clock)
        await books.subscribe(bus)
    venues = make_paper_venues(books, settings, venue_cfgs, rules, clock=clock)
    replay = PaperReplay(venues, mode=settings.mode.value, session=settings.session)
    await replay.start(bus, timeout_s=replay_timeout_s)
    if prepare is not None:
        await prepare(venues)
    assert replay.follower is not None
    partial = replay.partial()
    for v in sorted(partial):
        logger.error("paper balances not published venue=%s session=%s: EXEC starts at seq %s "
                     "(retention) with fills of it and no balance snapshot; the ledger keeps "
                     "its account", v, settings.session, replay.first_seq)
    await publish_balances(bus, {v: p for v, p in venues.items() if v not in partial},
                           replay.follower)
    for v, venue in venues.items():
        logger.info("paper venue ready venue=%s mode=%s orders=%d balances=%s", v, venue.mode,
                    len(venue.orders),
                    ",".join(f"{a}={b}" for a, b in sorted(venue.balances().items())))
    return venues

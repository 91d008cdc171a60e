"""Executor runtime wiring: venues (live ccxt or paper), gate, STRAT consumer, HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from arb_common.bus import Bus
from arb_common.errors import TemporaryError
from arb_common.runtime import ServiceRuntime, connect_bus
from arb_common.settings import Mode, load_settings
from arb_common.venues import VenueConfig, discover

from .arbitrage import IntentExecutor
from .balances import Balances
from .config import ExecutorSettings
from .gate import Gate
from .hedge import HedgeConfig
from .legs import TradingVenue
from .paper import BookCache, PaperVenue
from .paper_state import build_paper_venues
from .venue_client import MarketRules, VenueClient

logger = logging.getLogger(__name__)

SERVICE = "executor"
DURABLE = "executor-intents"


def make_client(cfg: VenueConfig, s: ExecutorSettings) -> VenueClient:
    return VenueClient(cfg, timeout_s=s.venue_timeout_s, rate_limit_ms=s.venue_rate_limit_ms,
                       recv_window_ms=s.venue_recv_window_ms)


async def load_markets_forever(client: VenueClient) -> None:
    """Retry ``load_markets`` with backoff until it works (readiness says it is missing)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_random_exponential(multiplier=0.5, max=10.0),
    ):
        with attempt:
            try:
                await client.load_markets()
            except Exception as exc:
                logger.warning("load_markets failed venue=%s error=%r", client.venue, exc)
                raise


async def paper_rules(cfgs: dict[str, VenueConfig], s: ExecutorSettings
                      ) -> dict[str, dict[str, MarketRules]]:
    """Venue market rules for paper fills (public exchangeInfo); empty when unreachable."""
    out: dict[str, dict[str, MarketRules]] = {}
    for vid, cfg in cfgs.items():
        client = make_client(cfg, s)
        try:
            await asyncio.wait_for(client.load_markets(), timeout=s.venue_timeout_s)
            out[vid] = {sym: client.rules(sym) for sym in s.symbol_list
                        if sym in client.symbols}
        except Exception as exc:  # noqa: BLE001 - fall back to configured defaults
            logger.warning("paper rules: exchangeInfo unavailable venue=%s error=%r; "
                           "using ARB_PAPER_* defaults", vid, exc)
        finally:
            await client.close()
    return out


async def build_venues(rt: ServiceRuntime, s: ExecutorSettings, bus: Bus,
                       closers: list[Any], books: BookCache) -> dict[str, TradingVenue]:
    venues: dict[str, TradingVenue] = {}
    if s.mode is Mode.live:
        cfgs = await discover(s.venue_list, s.venue_sim_url)
        clients = {v: make_client(cfgs[v], s) for v in s.venue_list}
        closers.extend(clients.values())
        for c in clients.values():
            rt.spawn(load_markets_forever(c), f"load_markets:{c.venue}")
        rt.readiness.probe("markets", lambda: (
            all(c.markets_loaded for c in clients.values()),
            ", ".join(f"{v}={'loaded' if c.markets_loaded else 'not loaded'}"
                      for v, c in clients.items())))
        venues.update(clients)
        return venues
    # paper / shadow: simulated fills from the latest books, never sends an order
    try:
        cfgs = await discover(s.venue_list, s.venue_sim_url, timeout=10.0)
    except TemporaryError as exc:
        logger.warning("venue discovery failed (%s); paper fills use default fees/rules", exc)
        cfgs = {}
    rules = await paper_rules(cfgs, s)
    # Orders and balances of this mode+session rebuilt from the EXEC stream before any intent
    # is consumed (a redelivered intent finds its order by coid and never fills twice).
    # Their balances are then published to EXEC for the ledger (shadow: the live account's).
    rt.readiness.set("markets", False, f"{s.mode.value}: rebuilding paper venues from EXEC")

    async def prepare(paper: dict[str, PaperVenue]) -> None:
        if s.mode is Mode.shadow:
            await shadow_balances(s, cfgs, paper)

    venues.update(await build_paper_venues(bus, s, cfgs, rules, books=books, prepare=prepare))
    rt.readiness.set("markets", True, f"{s.mode.value}: simulated fills")
    return venues


async def shadow_balances(s: ExecutorSettings, cfgs: dict[str, VenueConfig],
                          venues: Mapping[str, TradingVenue]) -> None:
    """Shadow starts from the live account's free balances (read-only: one signed account
    query per venue; nothing is ever sent), so its simulated fills meet the same
    insufficient-balance refusals live would. A venue that cannot be read keeps the
    configured paper balances (logged)."""
    for vid, cfg in cfgs.items():
        venue = venues.get(vid)
        if not isinstance(venue, PaperVenue):
            continue
        client = make_client(cfg, s)
        try:
            raw = await asyncio.wait_for(client.balances(), timeout=s.venue_timeout_s * 2)
            venue.set_balances({asset: free for asset, (free, _locked) in raw.items()})
            logger.info("shadow balances from the live account venue=%s assets=%d", vid,
                        len(raw))
        except Exception as exc:  # noqa: BLE001 - shadow still runs, on paper balances
            logger.warning("shadow: live balances unavailable venue=%s error=%r; using "
                           "ARB_PAPER_BALANCES", vid, exc)
        finally:
            await client.close()


def intent_lane(env: Any, payload: Any) -> str:
    """Intents of different symbols execute concurrently; one symbol's stay in order (a close
    never overtakes its open, a redelivery waits for the attempt in flight)."""
    return str(getattr(payload, "symbol", ""))


async def start(rt: ServiceRuntime) -> None:
    s = rt.settings
    assert isinstance(s, ExecutorSettings)
    closers: list[Any] = []

    async def close_venues() -> None:
        for c in closers:
            await c.close()

    rt.on_shutdown(close_venues)  # registered first: runs after the bus stopped consuming
    rt.readiness.set("gate", False, "starting")
    bus: Bus = await connect_bus(rt)
    # Latest books: the paper fill model, and the hedger's venue choice in every mode.
    books = BookCache()
    await books.subscribe(bus)
    venues = await build_venues(rt, s, bus, closers, books)
    gate = Gate(s.venue_list)
    await gate.start(bus)
    rt.readiness.probe("gate", gate.report)
    balances = Balances(venues, refresh_s=s.balance_refresh_s)
    rt.spawn(balances.run(rt.stopping), "balances")
    rt.on_shutdown(balances.close)
    executor = IntentExecutor(
        bus, venues, gate, max_age_s=s.intent_max_age_s, resolve_s=s.unknown_resolve_s,
        books=books, balances=balances,
        hedge=HedgeConfig(policy=s.hedge_policy, timeout_s=s.hedge_timeout_s,
                          max_attempts=s.hedge_max_attempts),
    )
    # Gate-closed naks retry at 0.5, 1, 2, 5 s ... until the intent is stale (then dropped).
    bus.consume(stream="STRAT", durable=DURABLE, filter_subject=bus.subjects.any("strat.intent.>"),
                handler=executor.handle, batch=16, backoff=(0.5, 1, 2, 5, 10, 30),
                ack_wait=s.intent_ack_wait_s,
                lane_key=intent_lane)
    rt.info_extra["gate"] = lambda: gate.report()[1]
    rt.info_extra["venues"] = lambda: sorted(venues)
    logger.info("executor started mode=%s venues=%s", s.mode.value, ",".join(venues))


def main() -> None:
    settings = load_settings(ExecutorSettings)
    ServiceRuntime(SERVICE, settings).run(start)

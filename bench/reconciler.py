"""Reconciler: startup reconciliation time and drift detection while running (issue 5).

Processes as in production: the venue simulator (``python -m arb_venue_sim``, venues alpha
and beta) and the reconciler (``python -m arb_reconciler``, ``ARB_MODE=live``: the real ccxt
signed REST path, venues configured through ``ARB_VENUE_<V>_*``) run as subprocesses on
loopback, against real NATS JetStream (own random bus prefix, streams deleted at the end) and
a fresh PostgreSQL database migrated to head (created and dropped per run). The harness
watches ``sys.ready.<venue>`` and ``recon.report`` with a core NATS subscription; every
timestamp is this machine's clock (``time.time_ns``).

Seeding (before anything is measured), the way the system itself would leave things:

- ``--history`` (1,000) historical orders: real signed MARKET orders on the simulator (half
  on each venue, BTC-USDT / ETH-USDT, buys and sells), each recorded in the ledger as the
  state service records the executor's events: ``OrderEvent`` NEW, its ``FillEvent``s, then
  ``OrderEvent`` FILLED, mode live, session ``bench-recon``, through ``arb_state.ingest
  .ingest_batch`` (orders, order keys, status history, fills, positions);
- ``--open`` (50) open orders: real GTC LIMIT buys resting on the venues far below the market
  (the simulator keeps them until the book crosses them, which never happens at these prices),
  recorded NEW then ACKED with their venue order id.

The ledger and the venues agree, so a correct startup run finds no discrepancy (checked and
printed: ``startup_discrepancies``).

1. Startup reconciliation, ``--startups`` process starts (no periodic run in between: every
   cadence set to an hour). Measured: process start (``Popen``) -> both venues'
   ``VenueReady(ready=True)`` received (the whole real startup path: interpreter, imports,
   settings, bus, venue clients, the run); broken down into process start -> the first
   ``VenueReady(ready=False, "reconciling")`` (boot: the gate closes first) and gate closed ->
   both ready (the reconciliation itself), plus the run's own ``ReconReport.duration_ms``.
   The import time of ``arb_reconciler.app`` and of ``ccxt.async_support`` alone (fresh
   interpreters) says how much of the boot is imports. Then in this process, ``--runs``
   times: ``Reconciler.run`` for both venues concurrently (built as app.py's ``start()``
   does, with the venue client class it uses -- ``AuditClient`` where it exists -- and the
   keyword arguments the installed ``Reconciler`` accepts, policy defaults; fresh venue
   clients = cold, i.e. ccxt's first call loads exchangeInfo; the same clients again =
   warm), and the pieces a run is made of, timed one by one (venue open orders, balances,
   one symbol's trades over 24 h, ledger open orders, ledger fill ids, schema check).
2. Drift detection while running, per ``--intervals`` value X (default: 1 s, then the
   reconciler's own defaults): a reconciler process with every
   periodic cadence setting (``ARB_RECON_INTERVAL_S`` and the issue's separate in-flight /
   trades / balance cadences, see ``CADENCE_VARS``; names the installed settings do not know
   are ignored by the reconciler and flagged in the output) set to X -- or, for
   ``default``, none overridden (the defaults are printed) -- and
   ``ARB_RECON_EXTERNAL_POLICY=ignore`` (so that an external order does not halt the venue
   for the later rounds; ``--env`` overrides), then ``--rounds`` rounds. Each round waits a
   random 0..X s (so injections fall at a random phase of the cycle), injects one
   discrepancy of each kind below on one venue (alternating), and waits
   until the ``recon.report`` of that venue lists each one (a discrepancy with its client
   order id; a ``balance_drift`` reported after a manual trade gets a row of its own, as drift
   is cumulative and cannot be attributed to one trade) or ``--detect-timeout-s`` (default
   3 X + 5 s; for ``default`` twice the longest default cadence + 5 s) passes; then each
   injection is undone (cancel / ledger event) so rounds are independent. A kind not detected
   in two rounds is dropped from the later rounds (reported as not detected). Kinds:

   - ``external_open``: a LIMIT order placed on the venue by hand (signed REST, client order
     id not ours) resting there;
   - ``ledger_only``: an order ACKED in the ledger that the venue never had;
   - ``lost_response``: our MARKET order, NEW in the ledger, sent while the simulator loses
     order responses (fault ``lose_order_responses``): filled on the venue, the ledger then
     says UNKNOWN (what the executor records after a timeout) -- the fill is missing. The
     injection time is the moment the (lost) answer came back: a run in the few ms between
     the NEW and the send could list the order as not found (a report received before the
     injection time does not count; the resolutions seen are printed per kind, ``as``);
   - ``missing_fill``: our MARKET order FILLED in the ledger but its fill never recorded
     (the ``FillEvent`` lost);
   - ``external_trade``: a manual MARKET trade through the simulator's control API
     (``POST /control/venues/{venue}/orders``), filled at once: no open order to see, only
     the venue's trades and balances show it.

   Measured: injection done -> report received; split into injection -> start of the run that
   listed it (the run id starts with its start time in ms) and run start -> report received.
   The ledger-side injections are completed or closed in the ledger by the harness after
   detection (no state service runs here, so the reconciler's corrective events are not
   ingested); the manual trade is left as it is (a reverse trade would be one more external
   trade). Also printed: the observed gap between two reports of one venue (the effective
   cadence).

Engines: ``--nats-url``, else ``ARB_TEST_NATS_URL``, else the embedded ``nats-server``;
``ARB_TEST_DATABASE_URL`` (a database is created and dropped per run). Run on demand (not a
test):

    ARB_TEST_NATS_URL=nats://127.0.0.1:4222 \\
    ARB_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
    uv run python bench/reconciler.py [--intervals 1,default]

Extra reconciler settings: ``--env ARB_X=Y`` (repeatable; e.g. an external policy). Prints a
table and writes bench/results/reconciler.json (with the load average before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from executor import (  # noqa: E402
    VENUES,
    Proc,
    Simulator,
    base_env,
    delete_streams,
    free_port,
    nats_engine,
)
from report import print_table, summarize, write_json  # noqa: E402
from state_ingest import fresh_database  # noqa: E402

from arb_common.bus import Bus  # noqa: E402
from arb_common.ledger import OPEN_STATUSES, Order  # noqa: E402
from arb_common.messages import (  # noqa: E402
    FillEvent,
    OrderEvent,
    ReconReport,
    VenueReady,
    decode,
    encode,
)
from arb_common.money import to_str  # noqa: E402
from arb_common.testing import connected_bus  # noqa: E402
from arb_executor.legs import client_order_id  # noqa: E402
from arb_executor.venue_client import (  # noqa: E402
    VenueClient,
    VenueOrder,
    ccxt_symbol,
    parse_order,
)
from arb_state.ingest import IngestEvent, ingest_batch  # noqa: E402

SESSION = "bench-recon"
# symbol -> (order quantity, resting LIMIT buy price far below the market)
SYMS = {"BTC-USDT": (Decimal("0.01"), Decimal("1000")),
        "ETH-USDT": (Decimal("0.2"), Decimal("100"))}
# Periodic cadences of the reconciler: the first exists today; the others are the issue's
# separate cadences (names as in the reconciler's settings being written). Those the
# installed ReconcilerSettings does not know are ignored by it (extra="ignore") and printed.
CADENCE_VARS = ("ARB_RECON_INTERVAL_S", "ARB_RECON_INFLIGHT_INTERVAL_S",
                "ARB_RECON_TRADES_INTERVAL_S", "ARB_RECON_BALANCE_INTERVAL_S")
KINDS = ("external_open", "ledger_only", "lost_response", "missing_fill", "external_trade")
MS = 1e6


def settings_defaults() -> dict[str, Any]:
    """``ARB_*`` name -> default of the installed ReconcilerSettings."""
    try:
        from arb_reconciler.config import ReconcilerSettings
    except Exception:  # noqa: BLE001 - only used for printing and timeouts
        return {}
    return {f"ARB_{k.upper()}": f.default for k, f in ReconcilerSettings.model_fields.items()}


def label(interval: float) -> str:
    """0 = the reconciler's own default cadences (nothing overridden)."""
    return "defaults" if interval == 0 else f"{interval:g}s"


def default_cadences() -> dict[str, float]:
    d = settings_defaults()
    return {v: float(d[v]) for v in CADENCE_VARS if isinstance(d.get(v), int | float)}


# ---------------------------------------------------------------- ledger events


def ingest_event(payload: Any, msg_id: str, ts: int) -> IngestEvent:
    """An event as the state service gets it from EXEC (the executor's envelope)."""
    env, p = decode(encode(payload, msg_id=msg_id, source="executor", session=SESSION,
                           mode="live", ts=ts))
    return env, p, None


def order_ev(venue: str, symbol: str, coid: str, side: str, qty: Decimal, status: str, *,
             vo: VenueOrder | None = None, intent: str = "", ts: int = 0) -> IngestEvent:
    ts = ts or time.time_ns()
    filled = vo.filled if vo is not None and status == vo.status else Decimal(0)
    ev = OrderEvent(venue=venue, symbol=symbol, client_order_id=coid, side=side,  # type: ignore[arg-type]
                    quantity=qty, filled_quantity=filled, status=status,  # type: ignore[arg-type]
                    venue_order_id=vo.venue_order_id if vo else None,
                    avg_price=vo.avg_price if vo and filled else None, intent_id=intent,
                    trade_id=intent.split(":")[0], ts=ts)
    return ingest_event(ev, f"order:{coid}:{status}:{to_str(filled)}", ts)


def fill_evs(venue: str, symbol: str, side: str, vo: VenueOrder, intent: str = ""
             ) -> list[IngestEvent]:
    out = []
    for f in vo.fills:
        ts = f.ts_ms * 1_000_000 if f.ts_ms else time.time_ns()
        ev = FillEvent(venue=venue, symbol=symbol, client_order_id=vo.client_order_id,
                       venue_trade_id=f.trade_id, side=side, quantity=f.quantity,  # type: ignore[arg-type]
                       price=f.price, fee=f.fee, fee_asset=f.fee_asset, ts=ts,
                       venue_order_id=vo.venue_order_id, intent_id=intent,
                       trade_id=intent.split(":")[0])
        out.append(ingest_event(ev, f"fill:{venue}:{f.trade_id}", ts))
    return out


class LedgerIO:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def ingest(self, events: list[IngestEvent], chunk: int = 600) -> None:
        for i in range(0, len(events), chunk):
            ingest_batch(self.engine, events[i:i + chunk])

    async def aingest(self, events: list[IngestEvent]) -> None:
        await asyncio.to_thread(self.ingest, events)

    def counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            total = s.scalar(select(func.count()).select_from(Order)) or 0
            open_ = s.scalar(select(func.count()).select_from(Order).where(
                Order.status.in_(OPEN_STATUSES))) or 0
            fills = s.scalar(select(func.count()).select_from(
                Order.metadata.tables["fills"])) or 0
        return {"orders": int(total), "open": int(open_), "fills": int(fills)}

    def close(self) -> None:
        self.engine.dispose()


# ---------------------------------------------------------------- seeding


async def seed(clients: dict[str, VenueClient], ledger: LedgerIO, history: int, n_open: int,
               tag: str) -> dict[str, Any]:
    sem = asyncio.Semaphore(8)
    syms = list(SYMS)

    async def hist(i: int) -> list[IngestEvent]:
        venue, sym = VENUES[i % 2], syms[(i // 2) % 2]
        side = "buy" if (i // 4) % 2 == 0 else "sell"
        intent = f"H{tag}{i}:open"
        coid = client_order_id(intent, side)
        qty = SYMS[sym][0]
        async with sem:
            t = time.time_ns()
            vo = await clients[venue].submit(sym, side, qty, coid)  # type: ignore[arg-type]
        return [order_ev(venue, sym, coid, side, qty, "NEW", intent=intent, ts=t),
                *fill_evs(venue, sym, side, vo, intent),
                order_ev(venue, sym, coid, side, qty, vo.status, vo=vo, intent=intent)]

    async def resting(i: int) -> list[IngestEvent]:
        venue, sym = VENUES[i % 2], syms[(i // 2) % 2]
        qty, px = SYMS[sym]
        intent = f"O{tag}{i}:open"
        coid = client_order_id(intent, "buy")
        async with sem:
            t = time.time_ns()
            raw = await clients[venue].ex.create_order(ccxt_symbol(sym), "limit", "buy",
                                                       float(qty), float(px),
                                                       params={"clientOrderId": coid})
        vo = parse_order(raw, sym)
        if vo.status != "ACKED":
            raise RuntimeError(f"resting LIMIT order {coid} is {vo.status}, not resting")
        return [order_ev(venue, sym, coid, "buy", qty, "NEW", intent=intent, ts=t),
                order_ev(venue, sym, coid, "buy", qty, "ACKED", vo=vo, intent=intent)]

    t0 = time.perf_counter()
    events = [e for evs in await asyncio.gather(*(hist(i) for i in range(history)))
              for e in evs]
    events += [e for evs in await asyncio.gather(*(resting(i) for i in range(n_open)))
               for e in evs]
    placed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await ledger.aingest(events)
    info = {"placed_s": round(placed_s, 2), "ingest_s": round(time.perf_counter() - t0, 2),
            "events": len(events), "ledger": await asyncio.to_thread(ledger.counts)}
    venue_open = {v: len(await c.open_orders()) for v, c in clients.items()}
    info["venue_open"] = venue_open
    if sum(venue_open.values()) != n_open or info["ledger"]["open"] != n_open:
        raise RuntimeError(f"seeding: expected {n_open} open orders, venues {venue_open}, "
                           f"ledger {info['ledger']}")
    return info


# ---------------------------------------------------------------- the bus, observed


@dataclass
class Seen:
    recv: int
    env_ts: int
    payload: Any


class Watch:
    """Every ``sys.ready.*`` and ``recon.report`` message, with its receive time."""

    def __init__(self) -> None:
        self.ready: list[Seen] = []
        self.reports: list[Seen] = []
        self.changed = asyncio.Event()
        self.undecodable = 0
        self.on_report: Callable[[Seen], None] | None = None

    async def on_msg(self, msg: Any) -> None:
        now = time.time_ns()
        try:
            env, p = decode(msg.data)
        except Exception:  # noqa: BLE001 - bench ignores what it cannot read
            self.undecodable += 1
            return
        seen = Seen(now, env.ts, p)
        if isinstance(p, VenueReady):
            self.ready.append(seen)
        elif isinstance(p, ReconReport):
            self.reports.append(seen)
            if self.on_report is not None:
                self.on_report(seen)
        self.changed.set()

    async def until(self, pred: Callable[[], bool], timeout: float, proc: Proc | None,
                    what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timeout after {timeout:.0f}s waiting for {what}"
                                   + (f"\n{proc.tail()}" if proc else ""))
            if proc is not None:
                proc.check_alive()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.2)


def run_start_ns(run_id: str) -> int | None:
    head = run_id.split("-", 1)[0]
    return int(head) * 1_000_000 if head.isdigit() and len(head) >= 12 else None


# ---------------------------------------------------------------- reconciler process


def reconciler_proc(home: Path, sim: Simulator, nats_url: str, prefix: str, db_url: str,
                    cadence_s: float, extra: dict[str, str], name: str) -> Proc:
    env = base_env()
    env.update({"ARB_MODE": "live", "ARB_SESSION": SESSION, "ARB_NATS_URL": nats_url,
                "ARB_BUS_PREFIX": prefix, "ARB_HTTP_PORT": str(free_port()),
                "ARB_DATABASE_URL": db_url, "ARB_VENUE_SIM_URL": sim.url,
                "ARB_VENUE_TIMEOUT_S": "5", "ARB_RETRY_MAX_S": "2"})
    for var in CADENCE_VARS if cadence_s > 0 else ():  # 0: the reconciler's defaults
        env[var] = str(cadence_s)
    for v, cfg in sim.configs.items():
        up = v.upper()
        env.update({f"ARB_VENUE_{up}_REST_URL": cfg.rest_url,
                    f"ARB_VENUE_{up}_WS_URL": cfg.ws_url,
                    f"ARB_VENUE_{up}_API_KEY": cfg.api_key,
                    f"ARB_VENUE_{up}_API_SECRET": cfg.api_secret,
                    f"ARB_VENUE_{up}_TAKER_FEE": cfg.taker_fee})
    env.update(extra)
    return Proc(name, "arb_reconciler", env, home / f"{name}.log")


async def start_and_wait_ready(proc: Proc, watch: Watch, timeout: float = 60.0
                               ) -> dict[str, Any]:
    """Start ``proc``; wait for both venues' ready=True; return the timings (ns)."""
    r0, p0 = len(watch.ready), len(watch.reports)
    t0 = time.time_ns()
    proc.start()

    def ready_true() -> dict[str, Seen]:
        out: dict[str, Seen] = {}
        for s in watch.ready[r0:]:
            if s.payload.ready and s.payload.venue not in out:
                out[s.payload.venue] = s
        return out

    await watch.until(lambda: len(ready_true()) == len(VENUES), timeout, proc,
                      "both venues ready=True")
    ready = ready_true()
    closed: dict[str, Seen] = {}
    for s in watch.ready[r0:]:
        if not s.payload.ready and s.payload.venue not in closed:
            closed[s.payload.venue] = s
    # the report of the run that opened each gate (published just before ready=True)
    await watch.until(lambda: all(any(r.payload.run_id == ready[v].payload.run_id
                                      for r in watch.reports[p0:]) for v in VENUES),
                      5, proc, "the startup reports")
    reports = {v: next(r for r in watch.reports[p0:]
                       if r.payload.run_id == ready[v].payload.run_id) for v in VENUES}
    return {"t0": t0, "ready": ready, "closed": closed, "reports": reports,
            "failed_runs": sum(1 for r in watch.reports[p0:] if not r.payload.ok)}


async def bench_startup(args: argparse.Namespace, home: Path, sim: Simulator, nats_url: str,
                        prefix: str, db_url: str, watch: Watch, procs: list[Proc]
                        ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    total, boot, recon, run_ms, ready_skew = [], [], [], [], []
    found: list[int] = []
    failed = 0
    for i in range(args.startups):
        p = reconciler_proc(home, sim, nats_url, prefix, db_url, 3600.0, args.extra,
                            f"reconciler-startup-{i}")
        procs.append(p)
        try:
            t = await start_and_wait_ready(p, watch)
        finally:
            p.stop()
        ready_ns = [t["ready"][v].recv for v in VENUES]
        closed_ns = [t["closed"][v].recv for v in VENUES if v in t["closed"]]
        total.append((max(ready_ns) - t["t0"]) / MS)
        if closed_ns:
            boot.append((min(closed_ns) - t["t0"]) / MS)
            recon.append((max(ready_ns) - min(closed_ns)) / MS)
        ready_skew.append((max(ready_ns) - min(ready_ns)) / MS)
        for v in VENUES:
            rep: ReconReport = t["reports"][v].payload
            run_ms.append(rep.duration_ms)
            found.append(len(rep.discrepancies))
        failed += t["failed_runs"]
        print(f"  startup {i + 1}/{args.startups}: process start -> both ready "
              f"{total[-1]:.0f} ms (boot {boot[-1] if boot else float('nan'):.0f}, "
              f"reconcile {recon[-1] if recon else float('nan'):.0f})")
    imports: dict[str, list[float]] = {"arb_reconciler.app": [], "ccxt.async_support": []}
    for _ in range(min(3, args.startups)):
        for module, samples in imports.items():
            t0 = time.perf_counter_ns()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", f"import {module}")
            await asyncio.wait_for(proc.wait(), 60)
            samples.append((time.perf_counter_ns() - t0) / MS)
    rows = [
        summarize("startup: process start -> both venues ready=True (python -m "
                  "arb_reconciler)", total, target_p99_ms=1000.0),
        summarize("  boot: process start -> first VenueReady(ready=False) (interpreter, "
                  "imports, settings, bus, discovery)", boot),
        summarize("    of which: python -c 'import arb_reconciler.app' (interpreter + "
                  "imports)", imports["arb_reconciler.app"]),
        summarize("    of which: python -c 'import ccxt.async_support' alone",
                  imports["ccxt.async_support"]),
        summarize("  reconcile: gate closed -> both venues ready=True", recon,
                  target_p99_ms=1000.0),
        summarize("  reconciler's own run duration (ReconReport.duration_ms, per venue)",
                  run_ms),
        summarize("  skew: first venue ready -> second venue ready", ready_skew),
    ]
    info = {"startups": args.startups, "startup_discrepancies": sorted(set(found)),
            "startup_failed_runs": failed}
    return rows, info


def make_reconciler(bus: Bus, url: str, clients: dict[str, VenueClient]) -> Any:
    """As app.py's ``start()`` builds it (keyword arguments the installed one accepts)."""
    from arb_reconciler.reconcile import Ledger, Reconciler

    ledger = Ledger(url, "live", timeout_s=5.0)
    wanted = {"query_venue_orders": True, "venue_timeout_s": 5.0, "db_timeout_s": 5.0,
              "symbols": list(SYMS)}
    accepted = inspect.signature(Reconciler).parameters
    rec = Reconciler(bus, ledger, dict(clients),
                     **{k: v for k, v in wanted.items() if k in accepted})
    return rec, ledger


async def timed(samples: list[float], coro: Awaitable[Any]) -> Any:
    t0 = time.perf_counter_ns()
    out = await coro
    samples.append((time.perf_counter_ns() - t0) / MS)
    return out


def client_class() -> type[VenueClient]:
    """The venue client app.py gives the reconciler (with the trade-audit reads, if any)."""
    try:
        from arb_reconciler.trades import AuditClient
    except ImportError:
        return VenueClient
    return AuditClient if issubclass(AuditClient, VenueClient) else VenueClient


async def bench_inprocess(args: argparse.Namespace, bus: Bus, sim: Simulator, db_url: str
                          ) -> list[dict[str, Any]]:
    cold, warm = [], []
    ph: dict[str, list[float]] = {k: [] for k in (
        "open_cold", "open_warm", "balances", "trades", "ledger_open", "ledger_fills",
        "schema")}
    n_trades: list[int] = []
    cls = client_class()
    for i in range(args.runs):
        clients = {v: cls(sim.configs[v], timeout_s=5.0) for v in VENUES}
        rec, ledger = make_reconciler(bus, db_url, clients)
        try:
            await timed(cold, asyncio.gather(*(rec.run(v, f"{time.time_ns() // 1_000_000}-"
                                                          f"bc{i}{v[0]}") for v in VENUES)))
            await timed(warm, asyncio.gather(*(rec.run(v, f"{time.time_ns() // 1_000_000}-"
                                                          f"bw{i}{v[0]}") for v in VENUES)))
        finally:
            for c in clients.values():
                await c.close()
        fresh = VenueClient(sim.configs[VENUES[i % 2]], timeout_s=5.0)
        try:
            await timed(ph["open_cold"], fresh.open_orders())
            await timed(ph["open_warm"], fresh.open_orders())
            await timed(ph["balances"], fresh.balances())
            since_ms = int(time.time() * 1000) - 86_400_000
            trades = await timed(ph["trades"], fresh.ex.fetch_my_trades(
                ccxt_symbol(list(SYMS)[i % 2]), since=since_ms, limit=1000))
            n_trades.append(len(trades))
        finally:
            await fresh.close()
        await timed(ph["ledger_open"], asyncio.to_thread(ledger.open_orders, VENUES[i % 2]))
        await timed(ph["schema"], asyncio.to_thread(ledger.check_schema))
        if hasattr(ledger, "fill_ids"):  # the trade audit's ledger read, where it exists
            with contextlib.suppress(TypeError):
                since = datetime.now(UTC) - timedelta(days=1)
                await timed(ph["ledger_fills"], asyncio.to_thread(ledger.fill_ids,
                                                                  VENUES[i % 2], since))
        ledger.close()
    return [
        summarize(f"in-process: Reconciler.run, both venues concurrently, new clients (cold; "
                  f"{cls.__name__})", cold, target_p99_ms=1000.0),
        summarize("in-process: Reconciler.run, both venues concurrently, same clients (warm)",
                  warm),
        summarize("  piece: venue open orders, first call of a client (+ ccxt exchangeInfo)",
                  ph["open_cold"]),
        summarize("  piece: venue open orders, warm client (fetch_open_orders, all symbols)",
                  ph["open_warm"]),
        summarize("  piece: venue balances (fetch_balance)", ph["balances"]),
        summarize(f"  piece: venue trades of one symbol, last 24 h (fetch_my_trades; "
                  f"{min(n_trades, default=0)}-{max(n_trades, default=0)} trades)",
                  ph["trades"]),
        summarize("  piece: ledger open orders of one venue (SELECT, in a thread)",
                  ph["ledger_open"]),
        summarize("  piece: ledger schema check (in a thread)", ph["schema"]),
        *([summarize("  piece: ledger fill ids of one venue, last 24 h (trade audit; in a "
                     "thread)", ph["ledger_fills"])] if ph["ledger_fills"] else []),
    ]


# ---------------------------------------------------------------- injections


@dataclass
class Injection:
    kind: str
    venue: str
    coid: str
    t_inject: int = 0
    undo: Callable[[], Awaitable[None]] | None = None
    balance_seen: int = 0  # first report after the injection listing a balance drift
    detected: int = 0
    run_start: int | None = None
    how: str = ""
    notes: list[str] = field(default_factory=list)


class Injector:
    def __init__(self, sim: Simulator, clients: dict[str, VenueClient], ledger: LedgerIO,
                 tag: str) -> None:
        self.sim, self.clients, self.ledger, self.tag = sim, clients, ledger, tag
        self.n = 0

    def _coid(self, kind: str, side: str) -> str:
        self.n += 1
        return client_order_id(f"I{self.tag}{self.n}{kind}:open", side)

    async def inject(self, kind: str, venue: str, sym: str) -> Injection:
        qty, px = SYMS[sym]
        c = self.clients[venue]
        if kind == "external_open":
            self.n += 1
            coid = f"web{self.tag}{self.n}"
            raw = await c.ex.create_order(ccxt_symbol(sym), "limit", "buy", float(qty),
                                          float(px), params={"clientOrderId": coid})
            inj = Injection(kind, venue, coid, time.time_ns())
            oid = str(raw["id"])

            async def undo_external_open() -> None:
                await c.ex.cancel_order(oid, ccxt_symbol(sym))
            inj.undo = undo_external_open
            return inj
        if kind == "ledger_only":
            coid = self._coid(kind, "buy")
            t = time.time_ns()
            await self.ledger.aingest([
                order_ev(venue, sym, coid, "buy", qty, "NEW", ts=t),
                order_ev(venue, sym, coid, "buy", qty, "ACKED", ts=t + 1)])
            inj = Injection(kind, venue, coid, time.time_ns())

            async def undo_ledger_only() -> None:
                await self.ledger.aingest([order_ev(venue, sym, coid, "buy", qty, "CANCELED")])
            inj.undo = undo_ledger_only
            return inj
        if kind == "lost_response":
            coid = self._coid(kind, "buy")
            await self.ledger.aingest([order_ev(venue, sym, coid, "buy", qty, "NEW")])
            await self.sim.fault(venue, "lose_order_responses", 1.0)
            try:
                with contextlib.suppress(Exception):  # the answer is lost: UnknownOutcome
                    await c.submit(sym, "buy", qty, coid)
            finally:
                await self.sim.clear(venue)
            inj = Injection(kind, venue, coid, time.time_ns())
            await self.ledger.aingest([order_ev(venue, sym, coid, "buy", qty, "UNKNOWN")])

            async def undo_lost_response() -> None:
                vo = await c.query(sym, coid)
                if vo is None:
                    raise RuntimeError(f"lost_response {coid}: not on the venue")
                await self.ledger.aingest([*fill_evs(venue, sym, "buy", vo),
                                           order_ev(venue, sym, coid, "buy", qty, vo.status,
                                                    vo=vo)])
            inj.undo = undo_lost_response
            return inj
        if kind == "missing_fill":
            coid = self._coid(kind, "sell")
            t = time.time_ns()
            vo = await c.submit(sym, "sell", qty, coid)
            await self.ledger.aingest([
                order_ev(venue, sym, coid, "sell", qty, "NEW", ts=t),
                order_ev(venue, sym, coid, "sell", qty, vo.status, vo=vo)])
            inj = Injection(kind, venue, coid, time.time_ns())

            async def undo_missing_fill() -> None:
                await self.ledger.aingest(fill_evs(venue, sym, "sell", vo))
            inj.undo = undo_missing_fill
            return inj
        if kind == "external_trade":
            r = await self.sim.http.post(f"{self.sim.url}/control/venues/{venue}/orders",
                                         json={"symbol": sym, "side": "buy",
                                               "quantity": to_str(qty)})
            r.raise_for_status()
            # not undone: a reverse trade would be one more external trade to flag
            return Injection(kind, venue, str(r.json()["client_order_id"]), time.time_ns())
        raise ValueError(kind)


def match(inj: Injection, seen: Seen) -> None:
    rep: ReconReport = seen.payload
    if rep.venue != inj.venue or seen.recv <= inj.t_inject:
        return
    for d in rep.discrepancies:
        if not inj.balance_seen and inj.kind == "external_trade" and "balance" in d.kind:
            inj.balance_seen = seen.recv
        if not inj.detected and d.client_order_id == inj.coid:
            inj.detected = seen.recv
            inj.run_start = run_start_ns(rep.run_id)
            inj.how = f"{d.kind}/{d.resolution}"


class Detection:
    """Rounds of injections against one running reconciler; reports matched as they come."""

    def __init__(self, watch: Watch, injector: Injector, kinds: list[str], timeout: float
                 ) -> None:
        self.watch, self.injector, self.timeout = watch, injector, timeout
        self.pending: list[Injection] = []
        self.done: list[Injection] = []
        self.misses = dict.fromkeys(kinds, 0)
        self.report_times: dict[str, list[int]] = {}

    def on_report(self, seen: Seen) -> None:
        self.report_times.setdefault(seen.payload.venue, []).append(seen.recv)
        for inj in self.pending:
            match(inj, seen)

    def all_detected(self) -> bool:
        return all(i.detected for i in self.pending)

    async def round(self, venue: str, sym: str) -> list[Injection]:
        active = [k for k, n in self.misses.items() if n < 2]
        self.pending = []
        for kind in active:
            self.pending.append(await self.injector.inject(kind, venue, sym))
        with contextlib.suppress(RuntimeError):  # what stays undetected is counted below
            await self.watch.until(self.all_detected, self.timeout, None, "detection")
        batch, self.pending = self.pending, []
        for inj in batch:
            if not inj.detected:
                self.misses[inj.kind] += 1
            if inj.undo is not None:
                try:
                    await inj.undo()
                except Exception as exc:  # noqa: BLE001 - noted; the round still counts
                    inj.notes.append(f"undo failed: {exc!r}"[:200])
        self.done += batch
        return batch

    def rows(self, interval: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        info: dict[str, Any] = {}
        for kind in self.misses:
            mine = [i for i in self.done if i.kind == kind]
            hit = [i for i in mine if i.detected]
            row = summarize(f"detect @ {label(interval)}: {kind}: injected -> recon.report lists "
                            f"it", [(i.detected - i.t_inject) / MS for i in hit])
            row["detected"] = f"{len(hit)}/{len(mine)}"
            rows.append(row)
            starts = [i for i in hit if i.run_start]
            if starts:
                rows.append(summarize("  injected -> start of the run that listed it",
                                      [(i.run_start - i.t_inject) / MS for i in starts]))  # type: ignore[operator]
                rows.append(summarize("  that run's start -> its report received",
                                      [(i.detected - i.run_start) / MS for i in starts]))  # type: ignore[operator]
            bal = [i for i in mine if i.balance_seen]
            if bal:
                row = summarize("  a balance_drift listed after it (cumulative drift, any "
                                "cause)", [(i.balance_seen - i.t_inject) / MS for i in bal])
                row["detected"] = f"{len(bal)}/{len(mine)}"
                rows.append(row)
            info[kind] = {"injected": len(mine), "detected": len(hit),
                          "as": sorted({i.how for i in hit}),
                          "notes": sorted({n for i in mine for n in i.notes})[:5]}
        gaps = [(b - a) / MS for ts in self.report_times.values()
                for a, b in zip(ts, ts[1:], strict=False)]
        rows.append(summarize(f"  reports observed: gap between two reports of one venue "
                              f"@ {label(interval)}", gaps))
        info["timeout_s"] = self.timeout
        return rows, info


async def bench_detect(args: argparse.Namespace, home: Path, sim: Simulator, nats_url: str,
                       prefix: str, db_url: str, watch: Watch, procs: list[Proc],
                       clients: dict[str, VenueClient], ledger: LedgerIO, interval: float,
                       tag: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    extra = {"ARB_RECON_EXTERNAL_POLICY": "ignore", **args.extra}
    p = reconciler_proc(home, sim, nats_url, prefix, db_url, interval, extra,
                        f"reconciler-detect-{label(interval)}")
    procs.append(p)
    itag = f"{tag}i{interval:g}".replace(".", "p")  # client order ids unique per interval
    cadences = default_cadences() if interval == 0 else dict.fromkeys(CADENCE_VARS, interval)
    longest = max(cadences.values(), default=10.0)
    det = Detection(watch, Injector(sim, clients, ledger, itag), args.kinds,
                    args.detect_timeout_s or (3 * interval + 5 if interval else 2 * longest + 5))
    phase = interval or cadences.get("ARB_RECON_INTERVAL_S", 10.0)
    try:
        await start_and_wait_ready(p, watch)
        watch.on_report = det.on_report
        for r in range(args.rounds):
            if all(n >= 2 for n in det.misses.values()):
                break
            await asyncio.sleep(random.uniform(0, phase))  # a random phase of the cycle
            p.check_alive()
            venue = VENUES[r % 2]
            batch = await det.round(venue, list(SYMS)[(r // 2) % 2])
            got = ", ".join(f"{i.kind}={(i.detected - i.t_inject) / MS:.0f}ms" if i.detected
                            else f"{i.kind}=not detected" for i in batch)
            print(f"  cadence {label(interval)} round {r + 1}/{args.rounds} ({venue}): {got}")
        p.check_alive()
    finally:
        watch.on_report = None
        p.stop()
    rows, info = det.rows(interval)
    info["cadences_s"] = cadences
    return rows, info


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace, nats_url: str, home: Path, db_url: str) -> None:
    prefix = "br" + secrets.token_hex(4)
    tag = secrets.token_hex(3)
    load_before = os.getloadavg()
    known = set(settings_defaults())
    params: dict[str, Any] = {
        "mode": "live", "venues": list(VENUES), "symbols": list(SYMS),
        "history_orders": args.history, "open_orders": args.open, "nats": nats_url,
        "cadence_vars": {v: ("known" if v in known else "unknown to this reconciler: ignored")
                         for v in CADENCE_VARS},
        "extra_env": args.extra, "load_before": [round(x, 2) for x in load_before]}
    sim = Simulator(home)
    procs: list[Proc] = []
    rows: list[dict[str, Any]] = []
    clients: dict[str, VenueClient] = {}
    ledger = LedgerIO(db_url)
    try:
        await sim.start()
        clients = {v: VenueClient(sim.configs[v], timeout_s=5.0) for v in VENUES}
        for c in clients.values():
            await c.load_markets()
        params["seed"] = await seed(clients, ledger, args.history, args.open, tag)
        print(f"seeded: {params['seed']}")
        async with connected_bus(nats_url, prefix, "bench", mode="live",
                                 session=SESSION) as bus:
            watch = Watch()
            await bus.nc.subscribe(bus.subjects.any("sys.ready.*"), cb=watch.on_msg)
            await bus.nc.subscribe(bus.subjects.recon_report(), cb=watch.on_msg)
            if args.startups > 0:
                r, info = await bench_startup(args, home, sim, nats_url, prefix, db_url, watch,
                                              procs)
                rows += r
                params.update(info)
            if args.runs > 0:
                try:
                    rows += await bench_inprocess(args, bus, sim, db_url)
                except Exception as exc:  # noqa: BLE001 - the process rows still stand
                    params["inprocess_error"] = repr(exc)[:300]
                    print(f"in-process runs skipped: {exc!r}", file=sys.stderr)
            params["detect"] = {}
            for interval in args.intervals:
                r, info = await bench_detect(args, home, sim, nats_url, prefix, db_url, watch,
                                             procs, clients, ledger, interval, tag)
                rows += r
                params["detect"][label(interval)] = info
            params["undecodable"] = watch.undecodable
        params["ledger_after"] = await asyncio.to_thread(ledger.counts)
    finally:
        for p in procs:
            p.stop()
        for c in clients.values():
            with contextlib.suppress(Exception):
                await c.close()
        await sim.close()
        ledger.close()
        with contextlib.suppress(Exception):
            await delete_streams(nats_url, prefix)
    params["load_after"] = [round(x, 2) for x in os.getloadavg()]
    params["cores"] = os.cpu_count()
    cad = ", ".join(f"{v}{'' if v in known else ' (ignored)'}" for v in CADENCE_VARS)
    print_table(f"Reconciler, live mode against the simulator: 2 venues, {args.history} "
                f"historical orders, {args.open} open; detection cadences {cad} = "
                f"{', '.join(label(i) for i in args.intervals)} (defaults: "
                f"{default_cadences()}) (load avg before "
                f"{params['load_before']}, after {params['load_after']}, {params['cores']} "
                f"cores)", rows)
    print(f"\nparams: { {k: v for k, v in params.items() if k not in ('nats',)} }")
    print(f"wrote {write_json('reconciler', rows, params)}")


def main() -> None:
    logging.getLogger("arb_common.bus").setLevel(logging.ERROR)  # our bus closing is no news
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--history", type=int, default=1000, help="historical (filled) orders")
    ap.add_argument("--open", type=int, default=50, help="open LIMIT orders resting")
    ap.add_argument("--startups", type=int, default=8, help="reconciler process starts")
    ap.add_argument("--runs", type=int, default=20, help="in-process Reconciler.run pairs")
    ap.add_argument("--intervals", default="1,default",
                    help="periodic cadences (s) to measure detection at, comma-separated; "
                         "'default' = the reconciler's own defaults (nothing overridden)")
    ap.add_argument("--rounds", type=int, default=8, help="injection rounds per interval")
    ap.add_argument("--kinds", default=",".join(KINDS), help="discrepancy kinds to inject")
    ap.add_argument("--detect-timeout-s", type=float, default=0.0,
                    help="give up on an injection after this long (default 3 x interval + 5)")
    ap.add_argument("--env", action="append", default=[], metavar="ARB_X=Y",
                    help="extra environment for the reconciler processes (repeatable)")
    ap.add_argument("--nats-url", default=os.environ.get("ARB_TEST_NATS_URL"),
                    help="default: ARB_TEST_NATS_URL, else the embedded nats-server")
    ap.add_argument("--logs", default=None,
                    help="keep the simulator's and reconcilers' logs in this directory")
    args = ap.parse_args()
    intervals: list[float] = []
    for x in (t.strip() for t in args.intervals.split(",") if t.strip()):
        try:
            value = 0.0 if x == "default" else float(x)
        except ValueError:
            ap.error(f"--intervals: {x!r} is not a number of seconds or 'default'")
        if x != "default" and value <= 0:
            ap.error("--intervals must be > 0 (or 'default')")
        intervals.append(value)
    args.intervals = intervals
    args.kinds = [k for k in args.kinds.split(",") if k]
    for k in args.kinds:
        if k not in KINDS:
            ap.error(f"--kinds: unknown kind {k!r} (known: {', '.join(KINDS)})")
    args.extra = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("ARB_"):
            ap.error(f"--env: expected ARB_NAME=VALUE, got {item!r}")
        args.extra[key] = value
    if args.history < 0 or args.open < 0:
        ap.error("--history and --open must be >= 0")
    with tempfile.TemporaryDirectory(prefix="arb-bench-recon-") as tmp:
        home = Path(args.logs or tmp)
        home.mkdir(parents=True, exist_ok=True)
        with nats_engine(args.nats_url, home) as url, fresh_database() as db_url:
            try:
                asyncio.run(run(args, url, home, db_url))
            except BaseException:
                for log in sorted(home.glob("*.log")):
                    print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-2000:]}",
                          file=sys.stderr)
                raise


if __name__ == "__main__":
    main()

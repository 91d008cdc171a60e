"""Torture test of the reconciliation (issue 5, "Proof"): the whole stack as processes in LIVE
mode (orders through the venues' signed REST API, against the simulator), while

- ``kill -9`` hits the executor, the state service and the reconciler at random moments,
  including between an order's send and its response (``order_latency_ms`` on one venue for a
  window: the order is executed at once and answered late; the executor is killed as soon as
  the venue has recorded the order, before the answer left); once more with the venue then
  answering 503 for ~20 s, so the restarted executor cannot look that order up in time and
  the reconciler has to find its fills (myTrades);
- the simulator loses order responses (``lose_order_responses`` with a probability for a
  window; sometimes the executor is killed inside that window too);
- a manual ("external") order is placed directly on a venue through the simulator's control
  API (``ARB_RECON_EXTERNAL_POLICY=ignore`` so trading continues).

At the end (faults cleared, trading off, every trade closed, no order open, the ledger caught
up with the EXEC stream and a reconciliation run after that), for every venue: the ledger's
orders, fills and balances equal the venue's exactly; no client order id was sent twice; no
fill is recorded twice; the balance change over the campaign is exactly our fills plus the
external order's, and the external order is flagged (a ``external_order`` /
``external_trade`` discrepancy in ``recon.report`` or ``/api/sync_status``).

Also: no order the venue executed was ever reported REJECTED (a timeout or an unreachable
venue is UNKNOWN). Printed as diagnostics: our orders placed after the external one, the
discrepancy kinds in ``recon.report``, the net position per symbol over both venues.
``ARB_TORTURE_KEEP_STREAMS=1`` keeps the run's NATS streams (logs: ``<tmp>/arb/logs``).

Size: ``ARB_TORTURE_SIZE`` (default 1: one round of every fault, ~2-3 minutes, for CI);
each unit adds one more round of every kill and fault and a few random extra kills. The kill
schedule comes from ``random.Random(ARB_TORTURE_SEED)`` (default 20261202); both are printed.
Run on demand, e.g. ``ARB_TORTURE_SIZE=5 ARB_TORTURE_SEED=7 uv run pytest -s
tests/integration/test_torture.py``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from stack_helpers import running_stack
from torture_helpers import (
    EXTERNAL_KINDS,
    OPEN_STATUSES,
    VENUE_OPEN,
    Check,
    Sim,
    StateApi,
    VenueTruth,
    compare_venue,
    delete_streams,
    kill9_and_wait_back,
    must,
    nats_request,
    pid_of,
    strategy_state,
    stream_payloads,
    wait,
)

from arb_common.subjects import Subjects
from arbctl.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SIZE = max(1, int(os.environ.get("ARB_TORTURE_SIZE", "1")))
SEED = int(os.environ.get("ARB_TORTURE_SEED", "20261202"))
# The supervisor's restart backoff (1 s doubling to 30 s, reset after 30 s up) makes repeated
# kills of one service slower: allow ~4 minutes per size unit on top of start and settle.
TIMEOUT_S = 300 + 240 * SIZE
VENUES = ("alpha", "beta")
KILLABLE = ("executor", "state", "reconciler")
EXTERNAL = {"venue": "alpha", "symbol": "BTC-USDT", "side": "buy", "quantity": "0.001"}
STACK_ENV = {
    # Fast round trips so a short campaign holds many opens and closes.
    "ARB_MAX_HOLD_S": "6", "ARB_COOLDOWN_S": "1", "ARB_SNAPSHOT_INTERVAL_S": "15",
    # A killed executor's intent comes back soon (within or past the intent max age).
    "ARB_INTENT_ACK_WAIT_S": "8",
    # Reconcile often; a manual order is recorded and alerted, trading goes on.
    "ARB_RECON_INTERVAL_S": "3", "ARB_RECON_EXTERNAL_POLICY": "ignore",
    # The venue's trades (missing fills, external trades) audited every few seconds.
    "ARB_RECON_TRADES_INTERVAL_S": "5",
}


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, fresh_database: str, redis_url: str,
          bus_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    try:
        with running_stack(tmp_path / "arb", mode="live", nats_url=nats_url,
                           database_url=fresh_database, redis_url=redis_url,
                           bus_prefix=bus_prefix, env=STACK_ENV, monkeypatch=monkeypatch) as s:
            yield s
    finally:
        if not os.environ.get("ARB_TORTURE_KEEP_STREAMS"):  # keep them to dig into a failure
            delete_streams(nats_url, bus_prefix)


# ---------------------------------------------------------------- the campaign
class Campaign:
    def __init__(self, stack: Stack, nats_url: str, rng: random.Random) -> None:
        self.stack = stack
        self.nats_url = nats_url
        self.rng = rng
        self.sim = Sim(f"http://127.0.0.1:{stack.port('venue-sim')}")
        self.kills: Counter[str] = Counter()
        self.in_flight_kills: list[tuple[str, str]] = []  # (venue, coid) answered after death
        self.lost_windows = 0
        self.external: dict[str, Any] | None = None
        self.log: list[str] = []

    def note(self, what: str) -> None:
        line = f"[torture {time.strftime('%H:%M:%S')}] {what}"
        self.log.append(line)
        print(line, flush=True)

    def schedule(self) -> list[str]:
        """Every fault at least ``SIZE`` times, a few random extra kills, the external order
        once somewhere in the first half; shuffled by the seeded RNG."""
        acts = [*KILLABLE, "latency_kill", "unreachable_kill", "lost_responses"] * SIZE
        acts += [self.rng.choice(KILLABLE) for _ in range(SIZE - 1)]
        self.rng.shuffle(acts)
        # After the first kill between send and response and the first lost-responses window
        # (the external order may halt new entries through the balance-drift check), before
        # at least one more fault.
        first = max(acts.index("latency_kill"), acts.index("lost_responses")) + 1
        acts.insert(self.rng.randrange(first, len(acts)) if first < len(acts) else first,
                    "external_order")
        return acts

    def kill(self, name: str) -> None:
        time.sleep(self.rng.uniform(0.0, 2.5))  # a random moment of the trading
        took = kill9_and_wait_back(self.stack, name)
        self.kills[name] += 1
        self.note(f"kill -9 {name}: back and ready after {took:.1f}s")

    def latency_kill(self, unreachable_s: float = 0.0) -> None:
        """Kill the executor between an order's send and its response: the venue executes
        orders at once but answers ``latency`` ms late; as soon as it has recorded one of ours,
        SIGKILL the executor. With ``unreachable_s``, the venue then answers every REST call
        with 503 for that long, so the restarted executor cannot look the order up at once."""
        venue = self.rng.choice(VENUES)
        latency = self.rng.choice((2500, 4000, 7000))  # 7000 > the client's 5 s timeout
        before = {r["client_order_id"] for r in self.sim.orders(venue)}
        self.sim.fault(venue, "order_latency_ms", latency, duration_s=40)
        try:
            new = wait(lambda: [r["client_order_id"] for r in self.sim.orders(venue)
                                if r["client_order_id"] not in before and not r["external"]],
                       35, step=0.05)
            if not new:
                self.note(f"latency window on {venue}: no order came in 35 s; no kill")
                return
            old = pid_of(self.stack, "executor")
            assert old
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            if unreachable_s:
                self.sim.fault(venue, "http_5xx", 1, duration_s=unreachable_s)
            must(lambda: any(r["name"] == "executor" and r["pid"] and r["pid"] != old
                             and r["ready"] for r in self.stack.processes()), 120,
                 "executor restarted and ready")
            took = time.monotonic() - t0
            time.sleep(max(0.0, unreachable_s - took))
        finally:
            self.sim.clear(venue)
        self.kills["executor"] += 1
        self.in_flight_kills += [(venue, c) for c in new]
        then = f", then 503 for {unreachable_s:.0f}s" if unreachable_s else ""
        self.note(f"kill -9 executor with {len(new)} order(s) on {venue} executed but not yet "
                  f"answered (latency {latency} ms{then}): {new}; back after {took:.1f}s")

    def unreachable_kill(self) -> None:
        self.latency_kill(unreachable_s=self.rng.uniform(18, 25))

    def lost_responses(self) -> None:
        venue = self.rng.choice((*VENUES, "both"))
        targets = VENUES if venue == "both" else (venue,)
        prob = self.rng.choice((0.3, 0.5, 1.0))
        window = self.rng.uniform(6, 12)
        kill_at = self.rng.uniform(1, window) if self.rng.random() < 0.5 else None
        lost0 = sum(self.sim.lost_responses().values())
        for v in targets:  # until cleared: the window lasts until a response was lost
            self.sim.fault(v, "lose_order_responses", prob)
        self.lost_windows += 1
        t0 = time.monotonic()
        try:
            if kill_at is not None:
                time.sleep(kill_at)
                took = kill9_and_wait_back(self.stack, "executor")
                self.kills["executor"] += 1
                self.note(f"kill -9 executor inside the lost-responses window ({took:.1f}s)")
            time.sleep(max(0.0, window - (time.monotonic() - t0)))
            wait(lambda: sum(self.sim.lost_responses().values()) > lost0, 40, step=0.2)
        finally:
            for v in targets:
                self.sim.clear(v)
        lost = sum(self.sim.lost_responses().values()) - lost0
        self.note(f"lose_order_responses p={prob} on {venue} for "
                  f"{time.monotonic() - t0:.1f}s: {lost} lost")

    def external_order(self) -> None:
        e = EXTERNAL
        self.external = self.sim.external_order(e["venue"], e["symbol"], e["side"],
                                                e["quantity"])
        self.note(f"external order on {e['venue']}: {e['side']} {e['quantity']} {e['symbol']} "
                  f"-> {self.external['client_order_id']} {self.external['status']}")

    def run(self, acts: list[str]) -> None:
        for act in acts:
            if act in KILLABLE:
                self.kill(act)
            else:
                getattr(self, act)()
            time.sleep(self.rng.uniform(1.0, 4.0))  # let trading go on between faults


# ---------------------------------------------------------------- end-of-campaign reads
def _recon_flags(nats_url: str, prefix: str, api: StateApi, ext: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    """Discrepancies naming the external order (coid, venue order id or a trade id), from the
    RECON stream's ``recon.report`` messages and from ``/api/sync_status``."""
    coid, oid = ext["client_order_id"], str(ext.get("venue_order_id"))
    trades = {str(f["trade_id"]) for f in ext.get("fills", [])}
    found = []
    reports = stream_payloads(nats_url, prefix, "recon.report", "recon.report")
    sync = api.sync_status().get("venues", [])
    for src, rows in (("recon.report", reports), ("sync_status", sync)):
        for r in rows:
            if r.get("venue") != EXTERNAL["venue"]:
                continue
            for d in r.get("discrepancies") or []:
                if d.get("kind") not in EXTERNAL_KINDS:
                    continue
                detail = str(d.get("detail") or "")
                # Named by its client order id, its venue order id, or a trade id given as
                # "trade <id>" / "trade_id=<id>" (a bare small number could be anything).
                named = d.get("client_order_id") in (coid, oid) or bool(
                    re.search(rf"\b{re.escape(coid)}\b|\b{re.escape(oid)}\b", detail)) or any(
                    re.search(rf"trade[ _]?(id)?[=: ]+{re.escape(t)}\b", detail)
                    for t in trades)
                if named:
                    found.append({"source": src, **d})
    return found


def _ledger_balances(database_url: str) -> dict[str, dict[str, Decimal]]:
    """The newest venue balance observation per venue and asset in the ledger (free+locked)."""
    eng = create_engine(database_url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(text(
                "SELECT DISTINCT ON (venue, asset) venue, asset, free, locked, ts "
                "FROM balances WHERE source = 'venue' ORDER BY venue, asset, ts DESC, id DESC"
            )).all()
    finally:
        eng.dispose()
    out: dict[str, dict[str, Decimal]] = {}
    for r in rows:
        out.setdefault(r.venue, {})[r.asset] = Decimal(r.free) + Decimal(r.locked)
    return out


def _last_balance_ts(database_url: str) -> dict[str, datetime]:
    eng = create_engine(database_url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(text("SELECT venue, max(ts) AS ts FROM balances "
                                     "WHERE source = 'venue' GROUP BY venue")).all()
    finally:
        eng.dispose()
    return {r.venue: r.ts for r in rows}


# ---------------------------------------------------------------- the test
@pytest.mark.timeout(TIMEOUT_S)
def test_torture_kill9_lost_responses_and_external_order_ledger_equals_venues(
        stack: Stack, nats_url: str, fresh_database: str, bus_prefix: str) -> None:
    t_start = time.monotonic()
    rng = random.Random(SEED)
    c = Campaign(stack, nats_url, rng)
    acts = c.schedule()
    print(f"\n[torture] size={SIZE} seed={SEED} schedule={acts}", flush=True)

    # 0) The venues' start balances, read before any order reached them.
    def start_balances() -> dict[str, dict[str, Decimal]] | None:
        if any(c.sim.orders(v) for v in VENUES):
            raise AssertionError("an order reached a venue before the start balances were read")
        got = {v: c.sim.balances(v) for v in VENUES}
        return got if not any(c.sim.orders(v) for v in VENUES) else None

    start = must(start_balances, 120, "the simulator's start balances", step=0.2)
    stack.wait_healthy(180, ready=True)
    api = StateApi(f"http://127.0.0.1:{stack.port('state')}")
    must(lambda: len(api.all("fills")) >= 2, 150, f"first fills (logs: {stack.logs})", step=1)
    c.note(f"trading; stack ready after {time.monotonic() - t_start:.0f}s")

    # 1) The campaign.
    c.run(acts)
    lost = c.sim.lost_responses()
    c.note(f"campaign done after {time.monotonic() - t_start:.0f}s")

    # 2) Settle: faults off, trading off, every trade closed, no order open anywhere, the
    #    ledger caught up with the EXEC stream, then one reconciliation run after all that.
    for v in VENUES:
        c.sim.clear(v)
    reply = must(lambda: nats_request(nats_url, Subjects(bus_prefix).ctl("strategy", "trading"),
                                      {"enabled": False, "actor": "torture"}), 30, "trading off")
    assert reply.get("ok"), reply
    closed = wait(lambda: not (s := strategy_state(nats_url, bus_prefix))["engine"].get("open")
                  and not s["engine"].get("closing"), 120, step=1)
    c.note(f"trading off; strategy has no open trade: {bool(closed)}")

    def quiet() -> bool:
        venue_open = [r for v in VENUES for r in c.sim.orders(v) if r["status"] in VENUE_OPEN]
        ledger_open = [o for o in api.all("orders") if o["status"] in OPEN_STATUSES]
        published = {(f["venue"], f["venue_trade_id"]) for f in
                     stream_payloads(nats_url, bus_prefix, "exec.fill.>", "exec.fill",
                                     idle_s=1.0)}
        recorded = {(f["venue"], f["venue_trade_id"]) for f in api.all("fills")}
        return not venue_open and not ledger_open and published <= recorded

    settled = wait(quiet, 120, step=2)
    c.note(f"quiet (no order open, ledger caught up): {bool(settled)}")
    t_quiet = datetime.now(UTC)
    recon_after = wait(lambda: all(ts > t_quiet for ts in
                                   _last_balance_ts(fresh_database).values())
                       and len(_last_balance_ts(fresh_database)) == len(VENUES), 90, step=1)
    c.note(f"a reconciliation run after quiet recorded balances: {bool(recon_after)}")
    time.sleep(2)  # corrections of that run travel through EXEC to the ledger
    ext = c.external
    assert ext is not None, "the external order was never placed"
    ext_now = next(r for r in c.sim.orders(EXTERNAL["venue"])
                   if r["client_order_id"] == ext["client_order_id"])
    flags = wait(lambda: _recon_flags(nats_url, bus_prefix, api, ext_now), 45, step=2) or []
    c.note(f"external order flagged: {bool(flags)}")

    # 3) The truth, side by side.
    orders, fills = api.all("orders"), api.all("fills")
    truths: list[VenueTruth] = []
    for v in VENUES:
        recs = c.sim.orders(v)
        truths.append(VenueTruth(
            venue=v, ours=[r for r in recs if not r["external"]],
            external=[r for r in recs if r["external"]],
            ledger_orders=[o for o in orders if o["venue"] == v],
            ledger_fills=[f for f in fills if f["venue"] == v],
            start=start[v], end=c.sim.balances(v)))
    checks: list[Check] = []
    for t in truths:
        checks += compare_venue(t)
    ledger_bal = _ledger_balances(fresh_database)
    for t in truths:
        nonzero = {a: x for a, x in t.end.items() if x}
        got = {a: x for a, x in ledger_bal.get(t.venue, {}).items() if x}
        checks.append(Check(f"{t.venue}: the ledger's last balances equal the venue's", got ==
                            nonzero, f"venue {nonzero} ledger {got}"))
    checks += _position_checks(truths, api.all("positions"))
    checks.append(Check(f"{EXTERNAL['venue']}: the external order is flagged "
                        f"({'/'.join(EXTERNAL_KINDS)})", bool(flags),
                        f"no discrepancy of kind {EXTERNAL_KINDS} names "
                        f"{ext_now['client_order_id']} / venue order {ext_now['venue_order_id']}"
                        f" / trades {[f['trade_id'] for f in ext_now['fills']]}; kinds seen: "
                        f"{_kinds_seen(nats_url, bus_prefix)}"))

    # 4) Print the counts, then assert (in this order).
    runtime = time.monotonic() - t_start
    print(f"\n[torture] size={SIZE} seed={SEED} runtime={runtime:.0f}s", flush=True)
    for t in truths:
        print(f"[torture] {t.venue}: orders venue={len(t.ours)} ledger={len(t.ledger_orders)} "
              f"(+{len(t.external)} external); fills venue="
              f"{sum(len(r['fills']) for r in t.ours)} ledger={len(t.ledger_fills)}", flush=True)
    coids = Counter(r["client_order_id"] for t in truths for r in t.ours)
    trades = Counter((f["venue"], f["venue_trade_id"]) for f in fills)
    print(f"[torture] kills: {dict(c.kills)} (executor between send and response: "
          f"{len(c.in_flight_kills)}); lost responses: {lost} in {c.lost_windows} window(s)",
          flush=True)
    ext_ms = int(ext_now.get("created_ms") or 0)
    after_ext = sum(1 for t in truths for r in t.ours if int(r.get("created_ms") or 0) > ext_ms)
    print(f"[torture] our orders after the external one: {after_ext}; recon discrepancy kinds: "
          f"{_kinds_seen(nats_url, bus_prefix)}", flush=True)
    net: Counter[str] = Counter()
    for f in fills:
        net[f["symbol"]] += Decimal(f["quantity"]) * (1 if f["side"] == "buy" else -1)
    print(f"[torture] net position over both venues per symbol (ledger; 0 = hedged): "
          f"{ {k: str(x) for k, x in sorted(net.items())} }", flush=True)
    # A timeout or an unreachable venue is an unknown outcome, never a rejection: no order the
    # venue executed may ever have been reported REJECTED (asserted below).
    executed = {(t.venue, r["client_order_id"]) for t in truths for r in t.ours
                if Decimal(r["filled_quantity"]) > 0}
    false_rejects = sorted({(o["venue"], o["client_order_id"]) for o in stream_payloads(
        nats_url, bus_prefix, "exec.order.>", "exec.order", idle_s=1.0)
        if o.get("status") == "REJECTED"} & executed)
    print(f"[torture] REJECTED events for orders the venue executed: "
          f"{len(false_rejects)} {false_rejects[:5]}", flush=True)
    checks.append(Check("no order the venue executed was ever reported REJECTED",
                        not false_rejects, f"{false_rejects[:5]}"))
    print(f"[torture] duplicates: client order ids sent twice="
          f"{sum(1 for n in coids.values() if n > 1)}, fills recorded twice="
          f"{sum(1 for n in trades.values() if n > 1)}; external flagged={len(flags) > 0} "
          f"({len(flags)} discrepancies)", flush=True)
    for ch in checks:
        print(f"[torture] {'PASS' if ch.ok else 'FAIL'} {ch.name}"
              f"{'' if ch.ok else ': ' + ch.detail}", flush=True)

    # The campaign really did what it says.
    assert all(c.kills[n] >= SIZE for n in KILLABLE), c.kills
    assert len(c.in_flight_kills) >= 1, "no kill between an order's send and its response"
    assert sum(lost.values()) >= 1, "the simulator lost no order response"
    assert settled, f"orders still open or the ledger behind after settling; logs: {stack.logs}"
    for ch in checks:
        assert ch.ok, f"{ch.name}: {ch.detail} (logs: {stack.logs})"


def _kinds_seen(nats_url: str, prefix: str) -> dict[str, int]:
    reports = stream_payloads(nats_url, prefix, "recon.report", "recon.report")
    return dict(Counter(d.get("kind") for r in reports for d in r.get("discrepancies") or []))


def _position_checks(truths: list[VenueTruth], positions: list[dict[str, Any]]) -> list[Check]:
    """The ledger's positions per venue and symbol equal the net of its fills there."""
    checks = []
    for t in truths:
        net: dict[str, Decimal] = {}
        for f in t.ledger_fills:
            q = Decimal(f["quantity"])
            net[f["symbol"]] = net.get(f["symbol"], Decimal(0)) + (q if f["side"] == "buy" else -q)
        pos: dict[str, Decimal] = {}
        for p in positions:
            if p["venue"] == t.venue:
                pos[p["symbol"]] = pos.get(p["symbol"], Decimal(0)) + Decimal(p["quantity"])
        net = {k: x for k, x in net.items() if x}
        pos = {k: x for k, x in pos.items() if x}
        checks.append(Check(f"{t.venue}: ledger positions equal the net of its fills",
                            net == pos, f"positions {pos} fills {net}"))
    return checks

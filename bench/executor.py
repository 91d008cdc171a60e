"""Executor latency: intent -> both legs acked, and hedge completion after a failed leg (issue 4).

Processes as in production: the venue simulator (``python -m arb_venue_sim``, two venues
alpha and beta, no added latency) and the executor (``python -m arb_executor``, live mode:
the real ccxt signed REST path to the simulated venues) run as subprocesses on loopback; the
harness plays the strategy and the reconciler on real NATS JetStream (its own random bus
prefix, streams deleted at the end): it opens the gate (``VenueReady`` on
``sys.ready.<venue>``), publishes ``Intent``s on ``strat.intent.<symbol>`` and follows
``exec.order.>`` with a core NATS subscription. Every timestamp is this machine's clock
(``time.time_ns``): the intent's envelope is stamped with the publish start.

1. Intent -> both legs acked: ``--intents`` intents (after ``--warmup`` unmeasured ones) at
   ``--rate`` per second, BTC-USDT and ETH-USDT alternating, buy/sell venues swapped every
   other intent so balances stay put. Measured: intent publish -> the harness received both
   legs' first ACKED / PARTIALLY_FILLED / FILLED order event. Target p99 < 10 ms. Breakdown
   from the envelope stamps, the executor's own ``arb_executor_intent_to_ack_seconds``
   (intent publish -> all its events durable, bucket-interpolated) and two floors measured
   from the harness: the JetStream publish -> PubAck of the intent, and signed REST orders
   through the same ccxt client the executor uses (``VenueClient.submit``), one at a time and
   one on each venue at once (as the two legs go out).
2. Hedge completion after an injected leg failure, ``--hedges`` samples per row, one at a
   time: a fault is set on the sample's sell venue through the simulator's control API,
   the intent is published, and the sample ends when every order event of the intent (its
   two legs and its ``role="hedge"`` orders) is terminal and bought == sold; then the fault
   is cleared. Faults: ``reject_orders`` (value 1: the sell leg is refused) and
   ``partial_fill`` 0.5 (the sell leg fills half, the rest expires). The fault stays on for
   the whole sample, so the hedge policy decides what is measured (hedge.py):
   ``unwind`` sends the one hedge to the long leg's venue (no fault there): every sample is
   exactly one real hedge; ``complete`` first retries on the faulted venue (refused again:
   then the other venue, two hedge orders; half filled again: retried there while attempts
   remain, then the other venue, up to ``hedge_max_attempts`` orders). The ``hedge_orders``
   column says how many hedge orders each sample took (min-max). The executor is restarted
   per policy (``--policies``). Beside the harness's view, the executor's
   ``arb_executor_hedge_seconds`` (legs found uneven -> even) sum/count per row.

Engines: ``--nats-url``, else ``ARB_TEST_NATS_URL``, else the embedded ``nats-server`` of the
venv (a temporary data directory). Run on demand (not a test):

    ARB_TEST_NATS_URL=nats://127.0.0.1:4222 uv run python bench/executor.py

Prints a table and writes bench/results/executor.json (with the load average before and
after: the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import print_table, summarize, write_json  # noqa: E402

from arb_common.bus import Bus  # noqa: E402
from arb_common.messages import Intent, OrderEvent, VenueReady, decode  # noqa: E402
from arb_common.testing import connected_bus, delete_prefixed_streams  # noqa: E402
from arb_common.venues import VenueConfig  # noqa: E402

SESSION = "bench-exec"
VENUES = ("alpha", "beta")
SYMBOLS = {"BTC-USDT": (Decimal("0.01"), Decimal("60000")),
           "ETH-USDT": (Decimal("0.2"), Decimal("3000"))}
ACKED = ("ACKED", "PARTIALLY_FILLED", "FILLED")
TERMINAL = ("FILLED", "REJECTED", "EXPIRED", "CANCELED")
FAULTS = {"rejected": ("reject_orders", 1.0, "fault"), "partial": ("partial_fill", 0.5, None)}
MS = 1e6


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_run(n: int) -> int:
    """A first port p with p .. p+n-1 all free on loopback (the simulator's venue ports)."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports found")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARB_")}
    env.update({"ARB_PROFILE": "dev", "ARB_HTTP_HOST": "127.0.0.1",
                "ARB_VENUES": ",".join(VENUES), "ARB_SYMBOLS": ",".join(SYMBOLS)})
    return env


class Proc:
    """A service subprocess with its log file; ``stop`` is idempotent (SIGTERM, then kill)."""

    def __init__(self, name: str, module: str, env: dict[str, str], log: Path) -> None:
        self.name, self.module, self.env, self.log = name, module, env, log
        self.port = int(env["ARB_HTTP_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.tail()}")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as c:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    r = await c.get(f"http://127.0.0.1:{self.port}/readyz")
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Simulator:
    """The venue simulator subprocess and its control API."""

    def __init__(self, home: Path) -> None:
        env = base_env()
        env.update({"ARB_HTTP_PORT": str(free_port()),
                    "ARB_SIM_BASE_PORT": str(free_port_run(len(VENUES))),
                    "ARB_SIM_START_BALANCES": "USDT=1000000000,BTC=100000,ETH=2000000"})
        self.proc = Proc("venue-sim", "arb_venue_sim", env, home / "venue-sim.log")
        self.url = f"http://127.0.0.1:{self.proc.port}"
        self.configs: dict[str, VenueConfig] = {}
        self.http = httpx.AsyncClient(timeout=5.0)

    async def start(self) -> None:
        self.proc.start()
        await self.proc.wait_ready()
        listed = (await self.http.get(f"{self.url}/control/venues")).json()["venues"]
        for v in listed:
            self.configs[v["id"]] = VenueConfig(
                id=v["id"], dialect=v["dialect"], rest_url=v["rest_url"].rstrip("/"),
                ws_url=v["ws_url"].rstrip("/"), api_key=v["api_key"],
                api_secret=v["api_secret"], taker_fee=str(v["taker_fee"]),
                maker_fee=str(v["maker_fee"]))

    async def fault(self, venue: str, kind: str, value: float | None,
                    reason: str | None = None, duration_s: float | None = None) -> None:
        r = await self.http.post(f"{self.url}/control/venues/{venue}/faults",
                                 json={"kind": kind, "value": value, "duration_s": duration_s,
                                       "reason": reason})
        r.raise_for_status()

    async def clear(self, venue: str) -> None:
        (await self.http.delete(f"{self.url}/control/venues/{venue}/faults")).raise_for_status()

    async def close(self) -> None:
        await self.http.aclose()
        self.proc.stop()


def executor_proc(home: Path, sim: Simulator, nats_url: str, prefix: str,
                  policy: str) -> Proc:
    env = base_env()
    env.update({"ARB_MODE": "live", "ARB_SESSION": SESSION, "ARB_NATS_URL": nats_url,
                "ARB_BUS_PREFIX": prefix, "ARB_HTTP_PORT": str(free_port()),
                "ARB_VENUE_SIM_URL": sim.url, "ARB_HEDGE_POLICY": policy})
    for v, cfg in sim.configs.items():
        up = v.upper()
        env.update({f"ARB_VENUE_{up}_REST_URL": cfg.rest_url,
                    f"ARB_VENUE_{up}_WS_URL": cfg.ws_url,
                    f"ARB_VENUE_{up}_API_KEY": cfg.api_key,
                    f"ARB_VENUE_{up}_API_SECRET": cfg.api_secret,
                    f"ARB_VENUE_{up}_TAKER_FEE": cfg.taker_fee})
    return Proc(f"executor[{policy}]", "arb_executor", env, home / f"executor-{policy}.log")


@contextlib.contextmanager
def nats_engine(url: str | None, home: Path) -> Any:
    if url:
        yield url
        return
    from arbctl.engines import start_nats

    eng = start_nats(home, port=0)
    try:
        yield eng.url
    finally:
        eng.stop()


async def delete_streams(nats_url: str, prefix: str) -> None:
    await delete_prefixed_streams(nats_url, prefix)


# ---------------------------------------------------------------- metrics


async def histogram(port: int, name: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(sum, count, cumulative buckets [(le, count)]) of an unlabelled histogram."""
    async with httpx.AsyncClient(timeout=5.0) as c:
        text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
    total = count = 0.0
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_sum "):
            total = float(line.split()[1])
        elif line.startswith(f"{name}_count "):
            count = float(line.split()[1])
        elif m := re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line):
            buckets.append((float(m.group(1)), float(m.group(2))))
    return total, count, buckets


def histogram_row(name: str, before: Any, after: Any) -> dict[str, Any]:
    """Delta of a histogram between two reads: mean and bucket-interpolated p50/p99 (ms)."""
    s0, c0, b0 = before
    s1, c1, b1 = after
    n = c1 - c0
    cum = [(le, c - dict(b0).get(le, 0.0)) for le, c in b1]

    def q(p: float) -> float:
        rank, prev_le, prev_c = p * n, 0.0, 0.0
        for le, c in cum:
            if c >= rank:
                if le == float("inf"):
                    return prev_le * 1000
                frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
                return (prev_le + (le - prev_le) * frac) * 1000
            prev_le, prev_c = le, c
        return float("nan")

    return {"hop": name, "n": int(n),
            "p50_ms": round(q(0.5), 3) if n else float("nan"),
            "p99_ms": round(q(0.99), 3) if n else float("nan"),
            "mean_ms": round((s1 - s0) / n * 1000, 3) if n else float("nan")}


# ---------------------------------------------------------------- observing the bus


@dataclass
class Track:
    intent: Intent
    t0: int  # publish start = the intent's envelope ts (ns)
    until: str  # "acked" (both legs acked) or "settled" (all terminal, bought == sold)
    puback: int = 0
    orders: dict[str, OrderEvent] = field(default_factory=dict)
    first_new: int = 0  # envelope ts of the first leg NEW
    new_stamp: dict[str, int] = field(default_factory=dict)  # leg side -> NEW envelope ts
    acked_recv: dict[str, int] = field(default_factory=dict)  # leg side -> received (ns)
    acked_stamp: dict[str, int] = field(default_factory=dict)  # leg side -> envelope ts
    hedges: set[str] = field(default_factory=set)
    end: int = 0
    failed: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Observer:
    def __init__(self) -> None:
        self.tracks: dict[str, Track] = {}
        self.undecodable = 0

    def watch(self, intent: Intent, t0: int, until: str) -> Track:
        t = Track(intent, t0, until)
        self.tracks[intent.intent_id] = t
        return t

    async def on_msg(self, msg: Any) -> None:
        now = time.time_ns()
        try:
            env, ev = decode(msg.data)
        except Exception:  # noqa: BLE001 - bench ignores what it cannot read
            self.undecodable += 1
            return
        if not isinstance(ev, OrderEvent):
            return
        t = self.tracks.get(ev.intent_id)
        if t is None or t.done.is_set():
            return
        old = t.orders.get(ev.client_order_id)
        if old is None or old.status not in TERMINAL:
            t.orders[ev.client_order_id] = ev
        if ev.role == "hedge":
            t.hedges.add(ev.client_order_id)
        else:
            if ev.status == "NEW" and ev.side not in t.new_stamp:
                t.new_stamp[ev.side] = env.ts
                t.first_new = min(t.new_stamp.values())
            if ev.status in ACKED and ev.side not in t.acked_recv:
                t.acked_recv[ev.side] = now
                t.acked_stamp[ev.side] = env.ts
        if t.until == "acked":
            if len(t.acked_recv) == 2:
                t.end = max(t.acked_recv.values())
                t.done.set()
            elif ev.role == "leg" and ev.status in TERMINAL and ev.filled_quantity == 0:
                t.failed = f"{ev.side} leg {ev.status} {ev.reason}"
                t.done.set()
        elif self._settled(t):
            t.end = now
            t.done.set()

    @staticmethod
    def _settled(t: Track) -> bool:
        legs = [o for o in t.orders.values() if o.role == "leg"]
        if len(legs) < 2 or any(o.status not in TERMINAL for o in t.orders.values()):
            return False
        net = sum((o.filled_quantity if o.side == "buy" else -o.filled_quantity)
                  for o in t.orders.values())
        return net == 0


def make_intent(tag: str, n: int, symbol: str | None = None) -> Intent:
    sym = symbol or list(SYMBOLS)[n % len(SYMBOLS)]
    qty, px = SYMBOLS[sym]
    buy, sell = VENUES if (n // 2) % 2 == 0 else VENUES[::-1]
    return Intent(intent_id=f"{tag}{n}:open", trade_id=f"{tag}{n}", symbol=sym, action="open",
                  buy_venue=buy, sell_venue=sell, quantity=qty, buy_price=px, sell_price=px,
                  net_spread_bps=Decimal("5"), reason="bench")


async def publish(bus: Bus, obs: Observer, intent: Intent, until: str) -> Track:
    t0 = time.time_ns()
    t = obs.watch(intent, t0, until)
    await bus.publish(bus.subjects.intent(intent.symbol), intent, f"intent:{intent.intent_id}",
                      ts=t0)
    t.puback = time.time_ns()
    return t


async def wait_all(tracks: list[Track], timeout: float, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    for t in tracks:
        while not t.done.is_set() and time.monotonic() < deadline:
            proc.check_alive()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(t.done.wait(), 0.5)


# ---------------------------------------------------------------- 1. intent -> both legs acked


async def run_acks(bus: Bus, obs: Observer, ex: Proc, args: argparse.Namespace,
                   tag: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    interval = 1.0 / args.rate
    warm = [await publish(bus, obs, make_intent(tag + "w", n), "acked")
            for n in range(args.warmup)]
    await wait_all(warm, 30, ex)
    await asyncio.sleep(0.5)
    h0 = await histogram(ex.port, "arb_executor_intent_to_ack_seconds")
    tracks: list[Track] = []
    start = time.monotonic()
    for n in range(args.intents):
        if n % 50 == 0:
            ex.check_alive()
        tracks.append(await publish(bus, obs, make_intent(tag, n), "acked"))
        delay = start + (n + 1) * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    elapsed = time.monotonic() - start
    await wait_all(tracks, 20, ex)
    await asyncio.sleep(0.5)  # the last intents' remaining events become durable
    h1 = await histogram(ex.port, "arb_executor_intent_to_ack_seconds")
    ok = [t for t in tracks if t.end and not t.failed]
    failed = [t.failed or "timeout" for t in tracks if not t.end or t.failed]
    acked = [(t.end - t.t0) / MS for t in ok]
    rows = [
        summarize("intent -> both legs acked (harness received)", acked, target_p99_ms=10.0),
        summarize("  harness: intent publish -> PubAck (JetStream floor)",
                  [(t.puback - t.t0) / MS for t in tracks]),
        summarize("  executor: intent stamped -> first leg NEW stamped",
                  [(t.first_new - t.t0) / MS for t in ok if t.first_new]),
        summarize("  executor: first NEW -> both legs acked stamped (REST; NEW stored meanwhile)",
                  [(max(t.acked_stamp.values()) - t.first_new) / MS for t in ok
                   if t.first_new]),
        summarize("  bus: last leg acked stamped -> harness received",
                  [(t.end - max(t.acked_stamp.values())) / MS for t in ok]),
        summarize("  leg skew: first leg NEW -> second leg NEW (stamps)",
                  [(max(t.new_stamp.values()) - min(t.new_stamp.values())) / MS for t in ok
                   if len(t.new_stamp) == 2]),
        summarize("  leg skew: first leg acked -> second leg acked (stamps)",
                  [(max(t.acked_stamp.values()) - min(t.acked_stamp.values())) / MS
                   for t in ok]),
        histogram_row("  executor: arb_executor_intent_to_ack_seconds (buckets; mean exact)",
                      h0, h1),
    ]
    info = {"intents": args.intents, "warmup": args.warmup, "rate": args.rate,
            "acked": len(ok), "failed": len(failed), "failures": sorted(set(failed))[:10],
            "achieved_rate": round(args.intents / max(elapsed, 1e-9), 2)}
    return rows, info


async def rest_floor(sim: Simulator, n: int) -> tuple[list[float], list[float]]:
    """Signed MARKET orders through the executor's own ccxt client, from the harness: one
    order on alpha at a time, and one on each venue at once (both legs, as the executor
    sends them)."""
    from arb_executor.venue_client import VenueClient

    clients = {v: VenueClient(sim.configs[v], timeout_s=5.0) for v in VENUES}
    single: list[float] = []
    pair: list[float] = []
    try:
        for c in clients.values():
            await c.load_markets()
        tag = secrets.token_hex(3)
        for i in range(n):
            side = "buy" if i % 2 == 0 else "sell"
            other = "sell" if side == "buy" else "buy"
            t0 = time.perf_counter_ns()
            await clients["alpha"].submit("BTC-USDT", side, Decimal("0.01"), f"b{tag}s{i}")
            single.append((time.perf_counter_ns() - t0) / MS)
            await asyncio.sleep(0.02)
            t0 = time.perf_counter_ns()
            await asyncio.gather(
                clients["alpha"].submit("BTC-USDT", side, Decimal("0.01"), f"b{tag}a{i}"),
                clients["beta"].submit("BTC-USDT", other, Decimal("0.01"), f"b{tag}b{i}"))
            pair.append((time.perf_counter_ns() - t0) / MS)
            await asyncio.sleep(0.02)
    finally:
        for c in clients.values():
            await c.close()
    return single, pair


# ---------------------------------------------------------------- 2. hedge completion


async def run_hedges(bus: Bus, obs: Observer, sim: Simulator, ex: Proc, policy: str,
                     args: argparse.Namespace, tag: str) -> tuple[list[dict[str, Any]], Any]:
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    for case, (kind, value, reason) in FAULTS.items():
        h0 = await histogram(ex.port, "arb_executor_hedge_seconds")
        samples: list[float] = []
        n_hedges: list[int] = []
        bad: list[str] = []
        for n in range(args.hedges):
            intent = make_intent(f"{tag}{policy[0]}{case[0]}", n)
            await sim.fault(intent.sell_venue, kind, value, reason)
            try:
                t = await publish(bus, obs, intent, "settled")
                await wait_all([t], args.hedge_wait_s, ex)
            finally:
                await sim.clear(intent.sell_venue)
            if t.end and t.hedges:
                samples.append((t.end - t.t0) / MS)
                n_hedges.append(len(t.hedges))
            else:
                state = ", ".join(f"{o.role}:{o.side}@{o.venue}={o.status}/{o.filled_quantity}"
                                  for o in t.orders.values())
                bad.append("not settled" if not t.end else f"no hedge [{state}]")
            await asyncio.sleep(1.0 / args.rate)
        await asyncio.sleep(0.3)
        h1 = await histogram(ex.port, "arb_executor_hedge_seconds")
        label = f"{case} sell leg ({kind} {value}), policy {policy}"
        row = summarize(f"hedge, {label}: publish -> all terminal, even", samples)
        row["hedge_orders"] = (f"{min(n_hedges)}-{max(n_hedges)}" if n_hedges else "")
        rows.append(row)
        rows.append(histogram_row("  executor: arb_executor_hedge_seconds (buckets; mean "
                                  "exact)", h0, h1))
        info[f"{policy}/{case}"] = {"samples": len(samples), "not_measured": len(bad),
                                    "problems": sorted(set(bad))[:5],
                                    "hedge_orders_mean": round(sum(n_hedges) / len(n_hedges), 2)
                                    if n_hedges else None}
    return rows, info


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace, nats_url: str, home: Path) -> None:
    prefix = "bx" + secrets.token_hex(4)
    tag = "X" + secrets.token_hex(3)
    load_before = os.getloadavg()
    sim = Simulator(home)
    procs: list[Proc] = []
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"mode": "live", "venues": list(VENUES), "symbols": list(SYMBOLS),
                              "hedges_per_row": args.hedges, "policies": args.policies,
                              "nats": nats_url, "load_before": [round(x, 2) for x in load_before]}
    try:
        await sim.start()
        async with connected_bus(nats_url, prefix, "strategy", mode="live",
                                 session=SESSION) as bus:
            for v in VENUES:
                await bus.publish(bus.subjects.ready(v),
                                  VenueReady(venue=v, ready=True, run_id="bench"),
                                  f"ready:{v}:bench:1")
            obs = Observer()
            await bus.nc.subscribe(bus.subjects.any("exec.order.>"), cb=obs.on_msg)
            for i, policy in enumerate(args.policies.split(",")):
                for p in procs:
                    p.stop()
                ex = executor_proc(home, sim, nats_url, prefix, policy)
                procs.append(ex)
                ex.start()
                await ex.wait_ready()
                print(f"executor ready (policy {policy}, port {ex.port}, logs {ex.log})")
                if i == 0 and args.intents > 0:
                    ack_rows, ack_info = await run_acks(bus, obs, ex, args, tag)
                    rows += ack_rows
                    params["acks"] = ack_info
                    single, pair = await rest_floor(sim, args.rest_floor)
                    rows.append(summarize("  floor: one signed REST order, ccxt -> simulator "
                                          "(harness)", single))
                    rows.append(summarize("  floor: both legs at once (alpha + beta, gather)",
                                          pair))
                if args.hedges > 0:
                    hedge_rows, hedge_info = await run_hedges(bus, obs, sim, ex, policy, args,
                                                              tag)
                    rows += hedge_rows
                    params.setdefault("hedge", {}).update(hedge_info)
            params["undecodable_events"] = obs.undecodable
    finally:
        for p in procs:
            p.stop()
        await sim.close()
        with contextlib.suppress(Exception):
            await delete_streams(nats_url, prefix)
    params["load_after"] = [round(x, 2) for x in os.getloadavg()]
    params["cores"] = os.cpu_count()
    print_table(f"Executor, live mode against the simulator, no added latency "
                f"(load avg before {params['load_before']}, after {params['load_after']}, "
                f"{params['cores']} cores)", rows)
    print(f"\nparams: { {k: v for k, v in params.items() if k not in ('nats',)} }")
    print(f"wrote {write_json('executor', rows, params)}")


def main() -> None:
    logging.getLogger("arb_common.bus").setLevel(logging.ERROR)  # our bus closing is no news
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--intents", type=int, default=300, help="measured intents (part 1)")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured intents first")
    ap.add_argument("--rate", type=float, default=10.0, help="intents per second")
    ap.add_argument("--hedges", type=int, default=40, help="samples per fault and policy")
    ap.add_argument("--policies", default="unwind,complete",
                    help="hedge policies, one executor run each (unwind: one hedge order "
                         "per sample; complete: retried on the faulted venue first)")
    ap.add_argument("--rest-floor", type=int, default=100,
                    help="direct signed REST orders from the harness (floor)")
    ap.add_argument("--hedge-wait-s", type=float, default=20.0,
                    help="give up on a hedge sample after this long")
    ap.add_argument("--nats-url", default=os.environ.get("ARB_TEST_NATS_URL"),
                    help="default: ARB_TEST_NATS_URL, else the embedded nats-server")
    ap.add_argument("--logs", default=None,
                    help="keep the simulator's and executors' logs in this directory")
    args = ap.parse_args()
    if args.rate <= 0:
        ap.error("--rate must be > 0")
    for p in args.policies.split(","):
        if p not in ("unwind", "complete", "cheapest"):
            ap.error(f"--policies: unknown policy {p!r}")
    with tempfile.TemporaryDirectory(prefix="arb-bench-exec-") as tmp:
        home = Path(args.logs or tmp)
        home.mkdir(parents=True, exist_ok=True)
        with nats_engine(args.nats_url, home) as url:
            try:
                asyncio.run(run(args, url, home))
            except BaseException:
                for log in sorted(home.glob("*.log")):
                    print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-2000:]}",
                          file=sys.stderr)
                raise


if __name__ == "__main__":
    main()

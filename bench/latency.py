"""Latency per hop through the whole system, with p50/p99 (issue: foundation benchmark).

Starts the dev stack (embedded NATS, PostgreSQL, Redis from the wheels, the simulator and the
five services, live mode: real signed REST against the simulated venues) in a temporary home,
at 2 venues x N symbols x R simulated book updates/s each, then observes the bus:

  frame -> book on bus   market-data's frame receipt (Book.recv_ts) -> Book seen on NATS
  frame -> intent        the triggering frame's receipt (Intent.origin_ts) -> Intent published
  intent -> legs acked   Intent published -> both legs' ACKED/FILLED order events published
  intent -> fill in PG   Intent published -> its last fill committed in PostgreSQL
  NATS floor             raw JetStream publish (PubAck) -> push-consumer delivery, same rate

All timestamps come from the same machine clock. Run on demand:

    uv run python bench/latency.py --seconds 60 --symbols 10 --rate 20

Prints a table and writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import nats
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import print_table, summarize, write_json  # noqa: E402

from arb_common.messages import Envelope, FillEvent, Intent, OrderEvent, decode  # noqa: E402
from arb_common.subjects import Subjects  # noqa: E402
from arbctl.stack import Stack, free_port_offset  # noqa: E402

BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "LTC", "TRX", "BCH"]


def configure_env(symbols: list[str], rate: int) -> None:
    os.environ["ARB_SYMBOLS"] = ",".join(symbols)
    os.environ["ARB_SIM_BOOK_UPDATES_PER_S"] = str(rate)
    qty = {s: {"BTC-USDT": "0.01", "ETH-USDT": "0.2"}.get(s, "5") for s in symbols}
    os.environ["ARB_ORDER_QTY"] = json.dumps(qty)
    balances = ["USDT=100000000"] + [f"{s.split('-')[0]}=1000000" for s in symbols]
    os.environ["ARB_SIM_START_BALANCES"] = ",".join(balances)
    os.environ["ARB_COOLDOWN_S"] = "5"
    os.environ["ARB_MAX_EXPOSURE_DEFAULT"] = "100000000"
    os.environ["ARB_DAILY_LOSS_LIMIT"] = "100000000"


class _BookTimes(msgspec.Struct):
    """The two Book fields the observer needs (decoding 20-level Decimal books for 400
    frames/s would load the machine the benchmark measures)."""

    recv_ts: int = 0


_env_decoder = msgspec.json.Decoder(Envelope)
_book_times = msgspec.json.Decoder(_BookTimes)


class Observer:
    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self.book_ms: list[float] = []
        self.intent_ms: list[float] = []
        self.intent_ts: dict[str, int] = {}
        self.acks: dict[str, dict[str, int]] = defaultdict(dict)
        self.frames = 0
        # breakdown: where the time goes inside each hop
        self.md_internal_ms: list[float] = []  # frame received -> Book envelope stamped
        self.book_env_ts: dict[int, int] = {}  # recv_ts -> Book envelope ts
        self.strat_ms: list[float] = []  # Book envelope stamped -> Intent envelope stamped
        self.new_ts: dict[str, dict[str, int]] = defaultdict(dict)
        self.fill_ts: dict[str, int] = {}

    async def on_msg(self, msg: Any) -> None:
        now = time.time_ns()
        if ".md.book." in msg.subject or msg.subject.startswith("md.book."):
            try:
                env = _env_decoder.decode(msg.data)
                recv_ts = _book_times.decode(env.payload).recv_ts
            except msgspec.DecodeError:
                return
            self.frames += 1
            if recv_ts:
                self.book_ms.append((now - recv_ts) / 1e6)
                self.md_internal_ms.append((env.ts - recv_ts) / 1e6)
                self.book_env_ts[recv_ts] = env.ts
            return
        try:
            env, payload = decode(msg.data)
        except Exception:  # noqa: BLE001 - bench ignores what it cannot read
            return
        if isinstance(payload, Intent):
            self.intent_ts[payload.intent_id] = env.ts
            if payload.origin_ts:
                self.intent_ms.append((env.ts - payload.origin_ts) / 1e6)
                book_ts = self.book_env_ts.get(payload.origin_ts)
                if book_ts is not None:
                    self.strat_ms.append((env.ts - book_ts) / 1e6)
        elif isinstance(payload, OrderEvent):
            if payload.status == "NEW":
                self.new_ts[payload.intent_id].setdefault(payload.side, env.ts)
            elif payload.status in ("ACKED", "FILLED", "PARTIALLY_FILLED"):
                self.acks[payload.intent_id].setdefault(payload.side, env.ts)
        elif isinstance(payload, FillEvent):
            self.fill_ts[payload.intent_id] = max(env.ts, self.fill_ts.get(payload.intent_id, 0))

    def breakdown(self, fills_pg: dict[str, int]) -> list[dict[str, Any]]:
        pickup, rest, to_fill, to_pg = [], [], [], []
        for intent_id, ts in self.intent_ts.items():
            new = self.new_ts.get(intent_id, {})
            legs = self.acks.get(intent_id, {})
            if len(new) == 2:
                pickup.append((min(new.values()) - ts) / 1e6)
                if len(legs) == 2:
                    rest.append((max(legs.values()) - min(new.values())) / 1e6)
            fill = self.fill_ts.get(intent_id)
            if fill is not None and len(legs) == 2:
                to_fill.append((fill - max(legs.values())) / 1e6)
            if fill is not None and intent_id in fills_pg:
                to_pg.append((fills_pg[intent_id] - fill) / 1e6)
        return [
            summarize("  market-data: frame -> Book stamped", self.md_internal_ms),
            summarize("  strategy: Book stamped -> Intent stamped", self.strat_ms),
            summarize("  executor: Intent stamped -> first NEW stamped", pickup),
            summarize("  executor: first NEW -> both legs acked", rest),
            summarize("  executor: legs acked -> last fill stamped", to_fill),
            summarize("  state: last fill stamped -> recorded in PG", to_pg),
        ]

    def ack_ms(self) -> list[float]:
        out = []
        for intent_id, legs in self.acks.items():
            if len(legs) == 2 and intent_id in self.intent_ts:
                out.append((max(legs.values()) - self.intent_ts[intent_id]) / 1e6)
        return out


def fills_recorded(db_url: str) -> dict[str, int]:
    """intent_id -> when its last fill was recorded in PostgreSQL (ns)."""
    conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT intent_id, max(ingested_at) FROM fills WHERE intent_id <> '' GROUP BY intent_id"
        ).fetchall()
    return {i: int(ts.timestamp() * 1e6) * 1000 for i, ts in rows}


def fill_ms(recorded: dict[str, int], intent_ts: dict[str, int]) -> list[float]:
    return [(ts - intent_ts[i]) / 1e6 for i, ts in recorded.items() if i in intent_ts]


async def nats_floor(url: str, rate: int, seconds: float) -> list[float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"BENCHFLOOR{os.getpid()}"
    await js.add_stream(name=name, subjects=[f"benchfloor{os.getpid()}.>"])
    lat: list[float] = []

    async def cb(msg: Any) -> None:
        lat.append((time.time_ns() - int(msg.data)) / 1e6)
        await msg.ack()

    sub = await js.subscribe(f"benchfloor{os.getpid()}.x", cb=cb, manual_ack=True)
    interval = 1.0 / rate
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await js.publish(f"benchfloor{os.getpid()}.x", str(time.time_ns()).encode())
        await asyncio.sleep(interval)
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    await js.delete_stream(name)
    await nc.close()
    return lat


async def observe(stack: Stack, seconds: float) -> Observer:
    subjects = Subjects(stack.bus_prefix)
    obs = Observer(subjects)
    nc = await nats.connect(stack.urls["nats"])
    for pattern in ("md.book.>", "strat.intent.>", "exec.order.>", "exec.fill.>"):
        await nc.subscribe(subjects.any(pattern), cb=obs.on_msg)
    await asyncio.sleep(seconds)
    await nc.close()
    return obs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20, help="simulated book updates/s per symbol")
    ap.add_argument("--port-offset", type=int, default=None,
                    help="default: a free offset below the ephemeral port range")
    args = ap.parse_args()
    symbols = [f"{b}-USDT" for b in BASES[: args.symbols]]
    configure_env(symbols, args.rate)
    home = Path(tempfile.mkdtemp(prefix="arb-bench-"))
    offset = free_port_offset() if args.port_offset is None else args.port_offset
    stack = Stack(home, mode="live", session_mode="clean", port_offset=offset,
                  bus_prefix="bench")
    print(f"starting stack in {home} ({len(symbols)} symbols x 2 venues, {args.rate} upd/s)")
    stack.start()
    try:
        stack.wait_healthy(240, ready=True)
        time.sleep(5)  # warm-up: books synced, markets loaded
        obs = asyncio.run(observe(stack, args.seconds))
        time.sleep(3)  # let the last fills commit
        recorded = fills_recorded(stack.urls["postgres"])
        fills = fill_ms(recorded, obs.intent_ts)
        floor = asyncio.run(nats_floor(stack.urls["nats"], 2 * len(symbols) * 10,
                                       min(args.seconds, 20)))
    finally:
        stack.stop()
    rows = [
        summarize("frame -> book on bus", obs.book_ms),
        summarize("frame -> intent", obs.intent_ms, target_p99_ms=5.0),
        summarize("intent -> both legs acked", obs.ack_ms()),
        summarize("intent -> fill in PostgreSQL", fills, target_p99_ms=25.0),
        summarize("NATS JetStream publish -> consume (floor)", floor),
    ]
    params = {"seconds": args.seconds, "venues": 2, "symbols": len(symbols), "rate": args.rate,
              "book_frames_seen": obs.frames, "intents": len(obs.intent_ts)}
    print_table(f"Latency per hop ({params})", rows)
    detail = obs.breakdown(recorded)
    print_table("Breakdown (envelope timestamps = when each service stamped its message)", detail)
    print(f"\nwrote {write_json('latency', rows + detail, params)}")


if __name__ == "__main__":
    main()

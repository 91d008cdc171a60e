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

import nats
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import print_table, summarize, write_json  # noqa: E402

from arb_common.messages import Book, Intent, OrderEvent, decode  # noqa: E402
from arb_common.subjects import Subjects  # noqa: E402
from arbctl.stack import Stack  # noqa: E402

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


class Observer:
    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self.book_ms: list[float] = []
        self.intent_ms: list[float] = []
        self.intent_ts: dict[str, int] = {}
        self.acks: dict[str, dict[str, int]] = defaultdict(dict)
        self.frames = 0

    async def on_msg(self, msg: Any) -> None:
        now = time.time_ns()
        try:
            env, payload = decode(msg.data)
        except Exception:  # noqa: BLE001 - bench ignores what it cannot read
            return
        if isinstance(payload, Book):
            self.frames += 1
            if payload.recv_ts:
                self.book_ms.append((now - payload.recv_ts) / 1e6)
        elif isinstance(payload, Intent):
            self.intent_ts[payload.intent_id] = env.ts
            if payload.origin_ts:
                self.intent_ms.append((env.ts - payload.origin_ts) / 1e6)
        elif isinstance(payload, OrderEvent) and payload.status in ("ACKED", "FILLED",
                                                                    "PARTIALLY_FILLED"):
            self.acks[payload.intent_id].setdefault(payload.side, env.ts)

    def ack_ms(self) -> list[float]:
        out = []
        for intent_id, legs in self.acks.items():
            if len(legs) == 2 and intent_id in self.intent_ts:
                out.append((max(legs.values()) - self.intent_ts[intent_id]) / 1e6)
        return out


def fill_ms(db_url: str, intent_ts: dict[str, int]) -> list[float]:
    conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT intent_id, max(ingested_at) FROM fills WHERE intent_id <> '' GROUP BY intent_id"
        ).fetchall()
    return [(ts.timestamp() * 1e9 - intent_ts[i]) / 1e6 for i, ts in rows if i in intent_ts]


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
    for pattern in ("md.book.>", "strat.intent.>", "exec.order.>"):
        await nc.subscribe(subjects.any(pattern), cb=obs.on_msg)
    await asyncio.sleep(seconds)
    await nc.close()
    return obs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20, help="simulated book updates/s per symbol")
    ap.add_argument("--port-offset", type=int, default=41000)
    args = ap.parse_args()
    symbols = [f"{b}-USDT" for b in BASES[: args.symbols]]
    configure_env(symbols, args.rate)
    home = Path(tempfile.mkdtemp(prefix="arb-bench-"))
    stack = Stack(home, mode="live", session_mode="clean", port_offset=args.port_offset,
                  bus_prefix="bench")
    print(f"starting stack in {home} ({len(symbols)} symbols x 2 venues, {args.rate} upd/s)")
    stack.start()
    try:
        stack.wait_healthy(240, ready=True)
        time.sleep(5)  # warm-up: books synced, markets loaded
        obs = asyncio.run(observe(stack, args.seconds))
        time.sleep(3)  # let the last fills commit
        fills = fill_ms(stack.urls["postgres"], obs.intent_ts)
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
    print(f"\nwrote {write_json('latency', rows, params)}")


if __name__ == "__main__":
    main()

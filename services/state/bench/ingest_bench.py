"""Ledger ingest throughput: 40 batches of 256 events (128 orders + 128 fills) into a fresh
database on ARB_TEST_DATABASE_URL's server.

Run: ``uv run python services/state/bench/ingest_bench.py``

Measured here (PostgreSQL 15 on localhost, shared busy machine, sync engine, one thread):
p50 ~90 ms per batch, ~2,600 events/s. The first version built a 256-row VALUES statement
per batch and spent ~85% of its time in SQLAlchemy compilation (~450-900 events/s);
executemany ("insertmanyvalues" / psycopg pipeline) reuses one compiled statement.
"""

import os
import secrets
import sys
import time
from pathlib import Path

import psycopg
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from state_helpers import event, fill, migrate, order  # noqa: E402

from arb_state.ingest import ingest_batch  # noqa: E402

SERVER = os.environ.get(
    "ARB_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


def main() -> None:
    admin = SERVER.replace("postgresql+psycopg://", "postgresql://")
    base = SERVER.rsplit("/", 1)[0] + "/"
    name = "arb_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate(base + name)
        eng = create_engine(base + name)
        n = 0
        times = []
        for _ in range(40):
            batch = []
            for _ in range(128):
                n += 1
                venue, symbol = ("alpha" if n % 2 else "beta"), SYMBOLS[n % 3]
                batch.append(event(order(f"c{n}", "FILLED", "1", venue=venue, symbol=symbol)))
                side = "buy" if n % 4 < 2 else "sell"
                batch.append(event(fill(f"t{n}", side, "0.5", "100", fee="0.01", venue=venue,
                                        symbol=symbol, coid=f"c{n}")))
            t = time.perf_counter()
            ingest_batch(eng, batch)
            times.append(time.perf_counter() - t)
        times.sort()
        print("| batches | events/batch | p50 ms | p95 ms | max ms | events/s |")
        print(f"| 40 | 256 | {times[20]*1000:.1f} | {times[38]*1000:.1f} | "
              f"{times[-1]*1000:.1f} | {40*256/sum(times):.0f} |")
        eng.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

"""The embedded engines are the real servers: talk to them with the real clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
import redis

from arbctl import engines


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "arb"


@pytest.fixture
def started(data_dir: Path) -> Iterator[dict[str, engines.Engine]]:
    out: dict[str, engines.Engine] = {}
    try:
        out["nats"] = engines.start_nats(data_dir, port=0)
        out["postgres"] = engines.start_postgres(data_dir, port=0)
        out["redis"] = engines.start_redis(data_dir, port=0)
        yield out
    finally:
        for eng in reversed(list(out.values())):
            eng.stop()


def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


async def test_all_three_engines_accept_real_clients_and_stop(
    started: dict[str, engines.Engine],
) -> None:
    nc = await nats.connect(started["nats"].url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="ENGINETEST", subjects=["enginetest.>"])
        ack = await js.publish("enginetest.hello", b"hi")
        assert ack.stream == "ENGINETEST" and ack.seq == 1
    finally:
        await nc.close()

    url = started["postgres"].url
    assert url.startswith("postgresql+psycopg://arb@127.0.0.1:") and url.endswith("/arb")
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x numeric)")
        conn.execute("INSERT INTO t VALUES (1.5)")
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (pytest.approx(1.5),)
        conn.execute("CREATE DATABASE other")  # tests create fresh databases from it

    r = redis.Redis.from_url(started["redis"].url)
    r.set("k", "v")
    assert r.get("k") == b"v"
    r.close()

    for eng in started.values():
        assert eng.alive()
        eng.stop()
        assert not eng.alive()
        assert not engines.port_open(eng.port)


def test_postgres_data_persists_across_restart(data_dir: Path) -> None:
    eng = engines.start_postgres(data_dir, port=0)
    try:
        with psycopg.connect(_pg(eng.url), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
    finally:
        eng.stop()
    eng = engines.start_postgres(data_dir, port=0)
    try:
        with psycopg.connect(_pg(eng.url)) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        eng.stop()


def test_taken_port_is_a_clear_error(data_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(engines.EngineError, match=f"port {port} .* already in use"):
            engines.start_redis(data_dir, port=port)

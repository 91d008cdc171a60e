"""Alembic upgrade/downgrade on real PostgreSQL and the schema-behind refusal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from state_helpers import alembic_config, migrate

from arb_common.errors import ConfigError
from arb_common.ledger import HEAD, Base, check_schema_current

TABLES = {
    "sessions", "orders", "order_status_history", "fills", "positions", "balances",
    "recon_runs", "discrepancies",
}  # fmt: skip


def test_upgrade_head_on_empty_db_then_downgrade_base(fresh_database: str) -> None:
    engine = create_engine(fresh_database)
    try:
        migrate(fresh_database)
        tables = set(inspect(engine).get_table_names())
        assert TABLES <= tables
        check_schema_current(engine)  # at head: no error
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        uniques = {
            tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("fills")
        }
        assert ("mode", "venue", "venue_trade_id") in uniques
        cols = {c["name"]: c for c in inspect(engine).get_columns("fills")}
        assert (cols["price"]["type"].precision, cols["price"]["type"].scale) == (38, 18)
        assert cols["ts"]["type"].timezone is True

        command.downgrade(alembic_config(fresh_database), "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        migrate(fresh_database)  # and back up again
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migration_matches_the_models(ledger_url: str) -> None:
    """No drift between arb_common.ledger and the migrations (autogenerate finds nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_schema_behind_is_refused_with_the_migrate_hint(fresh_database: str) -> None:
    engine = create_engine(fresh_database)
    try:
        with pytest.raises(ConfigError) as err:
            check_schema_current(engine)
    finally:
        engine.dispose()
    assert str(err.value) == (
        f"database revision <none> is behind head {HEAD}: run "
        "`alembic -c services/state/alembic.ini upgrade head` (or `make migrate`)"
    )


def test_service_refuses_to_start_on_old_schema_with_one_line(fresh_database: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARB_")}
    env |= {"ARB_DATABASE_URL": fresh_database, "ARB_HTTP_PORT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "arb_state"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "behind head" in lines[0] and "upgrade head" in lines[0]

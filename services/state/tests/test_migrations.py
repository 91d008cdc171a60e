"""Alembic upgrade/downgrade on real PostgreSQL and the schema-behind refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from state_helpers import downgrade, event, fill, migrate, order, snapshot

from arb_common.errors import ConfigError
from arb_common.ledger import HEAD, Base, check_schema_current
from arb_state.ingest import ingest_batch
from arb_state.partitions import is_partition, month_of, partition_name, partitions_of

TABLES_0001 = {
    "sessions", "orders", "order_status_history", "fills", "positions", "balances",
    "recon_runs", "discrepancies",
}  # fmt: skip
TABLES_0002 = {
    "fill_keys", "order_keys", "position_history", "equity_history", "intents",
    "slippage_analysis", "session_snapshots", "position_snapshots", "metrics_snapshots",
    "risk_guard_snapshots", "diagnostics", "tuning_results", "strategies", "portfolios",
    "portfolio_rules", "strategy_portfolio_map",
}  # fmt: skip


def _tables(engine: Engine) -> set[str]:
    return {t for t in inspect(engine).get_table_names() if not is_partition(t)}


def _relkind(engine: Engine, table: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT relkind FROM pg_class WHERE relname = :t"),
                                {"t": table}).scalar_one())


def test_upgrade_head_on_empty_db_then_downgrade_base_and_up_again(fresh_database: str) -> None:
    engine = create_engine(fresh_database)
    try:
        migrate(fresh_database)
        assert TABLES_0001 | TABLES_0002 <= _tables(engine)
        check_schema_current(engine)  # at head: no error
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        insp = inspect(engine)
        assert insp.get_pk_constraint("fill_keys")["constrained_columns"] == [
            "mode", "venue", "venue_trade_id"]
        assert insp.get_pk_constraint("order_keys")["constrained_columns"] == [
            "mode", "venue", "client_order_id"]
        cols: dict[str, Any] = {c["name"]: c for c in insp.get_columns("fills")}
        assert (cols["price"]["type"].precision, cols["price"]["type"].scale) == (38, 18)
        assert cols["ts"]["type"].timezone is True and cols["stream_seq"]["nullable"] is True
        assert (_relkind(engine, "fills"), _relkind(engine, "orders")) == ("p", "p")

        downgrade(fresh_database, "base")
        assert not (TABLES_0001 | TABLES_0002) & set(inspect(engine).get_table_names())
        assert inspect(engine).get_table_names() == ["alembic_version"]  # no partition left
        migrate(fresh_database)  # and back up again
        assert TABLES_0001 | TABLES_0002 <= _tables(engine)
    finally:
        engine.dispose()


def test_migration_matches_the_models(ledger_url: str) -> None:
    """No drift between arb_common.ledger and the migrations (autogenerate finds nothing);
    the monthly partitions are made at run time and not part of the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_name": lambda name, kind, _: not (kind == "table" and is_partition(name)),
            })  # fmt: skip
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def _seed_0001(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO fills (mode, session, venue, symbol, client_order_id, venue_trade_id, "
            "side, quantity, price, fee, fee_asset, ts) VALUES "
            "('paper', 's1', 'alpha', 'BTC-USDT', 'c1', 't1', 'buy', 1, 100, 0, 'USDT', "
            " '2024-03-05T10:00:00Z'), "
            "('paper', 's1', 'alpha', 'BTC-USDT', 'c1', 't2', 'buy', 1, 101, 0, 'USDT', now())"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO orders (mode, session, venue, symbol, client_order_id, side, quantity, "
            "filled_quantity, status, created_at, updated_at) VALUES "
            "('paper', 's1', 'alpha', 'BTC-USDT', 'c1', 'buy', 2, 2, 'FILLED', "
            " '2024-03-05T09:59:00Z', now())"
        ))  # fmt: skip


def test_upgrade_keeps_0001_rows_in_their_month_and_downgrade_brings_them_back(
    fresh_database: str,
) -> None:
    engine = create_engine(fresh_database)
    try:
        migrate(fresh_database, "0001_ledger")
        _seed_0001(engine)
        migrate(fresh_database)
        now = month_of(datetime.now(UTC))
        with engine.connect() as conn:
            fills = conn.execute(text(
                "SELECT tableoid::regclass::text, id, venue_trade_id FROM fills ORDER BY id"
            )).all()  # fmt: skip
            orders = conn.execute(text("SELECT tableoid::regclass::text, status FROM orders")).all()
            keys = conn.execute(text("SELECT venue_trade_id FROM fill_keys ORDER BY 1")).scalars()
            okeys = conn.execute(text("SELECT client_order_id, created_at FROM order_keys")).all()
        assert [tuple(r) for r in fills] == [("fills_p2024_03", 1, "t1"),
                                             (partition_name("fills", now), 2, "t2")]
        assert [tuple(r) for r in orders] == [("orders_p2024_03", "FILLED")]
        assert list(keys) == ["t1", "t2"]
        assert okeys[0][1] == datetime(2024, 3, 5, 9, 59, tzinfo=UTC)

        # The keys still deduplicate; the id sequence carries on after the copied rows.
        dup = event(fill("t1", "buy", "1", "100"), session="s1")
        new = event(fill("t3", "buy", "1", "102"), session="s1")
        assert ingest_batch(engine, [dup, new]).fills_inserted == 1
        with engine.connect() as conn:
            assert conn.execute(text("SELECT max(id) FROM fills")).scalar_one() == 3
        ingest_batch(engine, [event(order("c1", "ACKED"), session="s1")])  # stale: no change
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*), min(status) FROM orders")).one() == (
                1, "FILLED")

        downgrade(fresh_database, "0001_ledger")
        assert _relkind(engine, "fills") == "r"
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT venue_trade_id, price FROM fills ORDER BY id")).all()
            assert conn.execute(text("SELECT count(*) FROM orders")).scalar_one() == 1
        assert [tuple(r) for r in rows] == [("t1", Decimal(100)), ("t2", Decimal(101)),
                                            ("t3", Decimal(102))]
        uniques = inspect(engine).get_unique_constraints("fills")
        assert ["mode", "venue", "venue_trade_id"] in [u["column_names"] for u in uniques]
    finally:
        engine.dispose()


def test_0003_takes_stored_balances_as_live_readings_and_downgrade_drops_paper_accounts(
    fresh_database: str,
) -> None:
    engine = create_engine(fresh_database)
    try:
        migrate(fresh_database, "0002_memory")
        with engine.begin() as conn:  # a reconciler's reading, before paper accounts existed
            conn.execute(text("INSERT INTO balances (venue, asset, free, ts) "
                              "VALUES ('alpha', 'USDT', 5, now())"))
        migrate(fresh_database)
        ingest_batch(engine, [(*event(snapshot("alpha", 0, USDT="1000"), session="s1"), 1)])
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT mode, session, source, free, stream_seq "
                                     "FROM balances ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("live", "", "venue", Decimal(5), None),
                                            ("paper", "s1", "ledger", Decimal(1000), 1)]
        downgrade(fresh_database, "0002_memory")
        with engine.connect() as conn:
            left = conn.execute(text("SELECT venue, source, free FROM balances")).all()
        assert [tuple(r) for r in left] == [("alpha", "venue", Decimal(5))]
        assert "mode" not in {c["name"] for c in inspect(engine).get_columns("balances")}
    finally:
        engine.dispose()


def test_head_creates_default_and_months_ahead(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            parts = partitions_of(conn, "fills")
    finally:
        engine.dispose()
    assert parts["fills_default"] == "DEFAULT"
    assert partition_name("fills", month_of(datetime.now(UTC))) in parts
    assert len(parts) >= 1 + 4  # default, this month and 3 ahead (the migration's horizon)


def test_schema_behind_is_refused_with_the_migrate_hint(fresh_database: str) -> None:
    engine = create_engine(fresh_database)
    try:
        with pytest.raises(ConfigError) as err:
            check_schema_current(engine)
        migrate(fresh_database, "0001_ledger")
        with pytest.raises(ConfigError) as err_old:
            check_schema_current(engine)
    finally:
        engine.dispose()
    assert str(err.value) == (
        f"database revision <none> is behind head {HEAD}: run "
        "`alembic -c services/state/alembic.ini upgrade head` (or `make migrate`)"
    )
    assert str(err_old.value).startswith(f"database revision 0001_ledger is behind head {HEAD}")


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

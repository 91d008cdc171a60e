"""Memory: fills/orders partitioned by month (uniqueness through key tables), fills.stream_seq,
position/equity history, intents, slippage analysis, snapshots, diagnostics, tuning results,
strategies and portfolios.

Revision ID: 0002_memory
Revises: 0001_ledger
Create Date: 2026-11-29

``fills`` and ``orders`` become ``PARTITION BY RANGE`` (``ts`` / ``created_at``). A unique
constraint on a partitioned table must contain the partition key, so the business keys move
to the unpartitioned ``fill_keys`` / ``order_keys``. Existing rows are kept: the 0001 table is
renamed away, the partitioned one created with the months its rows need (plus the current
one and ``MONTHS_AHEAD``, and a DEFAULT partition), the rows and their keys copied, the id
sequence carried on, and the old table dropped. ``downgrade`` does the reverse (dropping
``stream_seq`` and the new tables).

Remember: add the new revision to ``arb_common.ledger.REVISIONS`` (HEAD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from arb_state import partitions

revision: str = "0002_memory"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Months created ahead here; the state service keeps ARB_PARTITION_MONTHS_AHEAD created.
MONTHS_AHEAD = 3

MONEY = sa.Numeric(precision=38, scale=18)
TSTZ = sa.DateTime(timezone=True)
OPEN_ORDERS = sa.text("status IN ('NEW', 'SUBMITTED', 'ACKED', 'PARTIALLY_FILLED', 'UNKNOWN')")


def _col(name: str, type_: sa.types.TypeEngine[Any], *, null: bool = False,
         default: str | None = None) -> sa.Column[Any]:  # fmt: skip
    server_default = sa.text(default) if default is not None else None
    return sa.Column(name, type_, nullable=null, server_default=server_default)


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False)


def _json(name: str, default: str | None = None) -> sa.Column[Any]:
    return _col(name, postgresql.JSONB(astext_type=sa.Text()), default=default)


# ------------------------------------------------------------------ fills / orders shapes


def _fill_columns() -> list[sa.Column[Any]]:
    return [
        _id(), _col("mode", sa.Text()), _col("session", sa.Text()), _col("venue", sa.Text()),
        _col("symbol", sa.Text()), _col("client_order_id", sa.String(64)),
        _col("venue_order_id", sa.Text(), null=True), _col("venue_trade_id", sa.Text()),
        _col("side", sa.String(4)), _col("quantity", MONEY), _col("price", MONEY),
        _col("fee", MONEY), _col("fee_asset", sa.Text()), _col("ts", TSTZ),
        _col("intent_id", sa.Text(), default="''"), _col("trade_id", sa.Text(), default="''"),
        _col("ingested_at", TSTZ, default="now()"),
    ]  # fmt: skip


def _order_columns() -> list[sa.Column[Any]]:
    return [
        _id(), _col("mode", sa.Text()), _col("session", sa.Text()), _col("venue", sa.Text()),
        _col("symbol", sa.Text()), _col("client_order_id", sa.String(64)),
        _col("venue_order_id", sa.Text(), null=True), _col("side", sa.String(4)),
        _col("quantity", MONEY), _col("filled_quantity", MONEY, default="0"),
        _col("avg_price", MONEY, null=True), _col("status", sa.String(20)),
        _col("intent_id", sa.Text(), default="''"), _col("trade_id", sa.Text(), default="''"),
        _col("reason", sa.Text(), default="''"), _col("created_at", TSTZ),
        _col("updated_at", TSTZ),
    ]  # fmt: skip


FILL_COLS = [c.name for c in _fill_columns()]
ORDER_COLS = [c.name for c in _order_columns()]

# Plain indexes (name, columns) both shapes have; 0002 adds the ones after them.
FILL_INDEXES = [
    ("ix_fills_mode_venue_client_order_id", ["mode", "venue", "client_order_id"]),
    ("ix_fills_session_ts", ["session", "ts"]),
    ("ix_fills_symbol_ts", ["symbol", "ts"]),
    ("ix_fills_trade_id", ["trade_id"]),
]
ORDER_INDEXES = [
    ("ix_orders_session_created_at", ["session", "created_at"]),
    ("ix_orders_symbol_created_at", ["symbol", "created_at"]),
    ("ix_orders_trade_id", ["trade_id"]),
]
FILL_INDEXES_NEW = [("ix_fills_mode_session_stream_seq", ["mode", "session", "stream_seq"])]
ORDER_INDEXES_NEW = [("ix_orders_mode_venue_client_order_id", ["mode", "venue", "client_order_id"])]
ORDER_OPEN_INDEXES = [
    ("ix_orders_open_mode_venue", ["mode", "venue"]),
    ("ix_orders_open_session_created_at", ["session", "created_at"]),
]


def _create_partitioned_fills() -> None:
    op.create_table(
        "fills", *_fill_columns(), _col("stream_seq", sa.BigInteger(), null=True),
        sa.PrimaryKeyConstraint("id", "ts", name="pk_fills"),
        postgresql_partition_by="RANGE (ts)",
    )  # fmt: skip
    for name, cols in FILL_INDEXES + FILL_INDEXES_NEW:
        op.create_index(name, "fills", cols)


def _create_partitioned_orders() -> None:
    op.create_table(
        "orders", *_order_columns(),
        sa.PrimaryKeyConstraint("id", "created_at", name="pk_orders"),
        postgresql_partition_by="RANGE (created_at)",
    )  # fmt: skip
    for name, cols in ORDER_INDEXES + ORDER_INDEXES_NEW:
        op.create_index(name, "orders", cols)
    for name, cols in ORDER_OPEN_INDEXES:
        op.create_index(name, "orders", cols, postgresql_where=OPEN_ORDERS)


def _create_flat_fills() -> None:
    op.create_table(
        "fills", *_fill_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_fills"),
        sa.UniqueConstraint("mode", "venue", "venue_trade_id",
                            name="uq_fills_mode_venue_venue_trade_id"),
    )  # fmt: skip
    for name, cols in FILL_INDEXES:
        op.create_index(name, "fills", cols)


def _create_flat_orders() -> None:
    op.create_table(
        "orders", *_order_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("mode", "venue", "client_order_id",
                            name="uq_orders_mode_venue_client_order_id"),
    )  # fmt: skip
    for name, cols in ORDER_INDEXES:
        op.create_index(name, "orders", cols)


def _retire(table: str, suffix: str, indexes: list[str], constraints: list[str]) -> str:
    """Rename ``table`` (and its id sequence) out of the way; drop the index and constraint
    names its replacement reuses (index names are unique per schema)."""
    old = f"{table}_{suffix}"
    for name in indexes:
        op.drop_index(name, table_name=table)
    for name in constraints:
        op.drop_constraint(name, table, type_="unique" if name.startswith("uq_") else "primary")
    op.rename_table(table, old)
    op.execute(f"ALTER SEQUENCE {table}_id_seq RENAME TO {old}_id_seq")
    return old


def _copy(old: str, table: str, cols: list[str]) -> None:
    names = ", ".join(cols)
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {old}")
    # Carry the id sequence on (ids stay unique and increasing across the swap).
    op.execute(f"SELECT setval('{table}_id_seq', COALESCE((SELECT max(id) FROM {old}), 0) + 1, "
               "false)")


def _create_months_of(old: str, table: str, key: str) -> None:
    conn = op.get_bind()
    partitions.ensure_default(conn, table)
    months = conn.execute(sa.text(
        f"SELECT DISTINCT date_trunc('month', {key}, 'UTC')::date FROM {old}")).scalars()
    for month in sorted(months):
        partitions.ensure_month(conn, table, month)


# ------------------------------------------------------------------ upgrade


def _online_only() -> None:
    if context.is_offline_mode():
        raise RuntimeError("0002_memory reads the existing rows (their months) and moves "
                           "them: run it against the database, not with --sql")


def upgrade() -> None:
    _online_only()
    _create_tables()
    _create_snapshot_tables()
    _create_catalog_tables()

    op.create_table(
        "fill_keys", _col("mode", sa.Text()), _col("venue", sa.Text()),
        _col("venue_trade_id", sa.Text()),
        sa.PrimaryKeyConstraint("mode", "venue", "venue_trade_id", name="pk_fill_keys"),
    )  # fmt: skip
    op.create_table(
        "order_keys", _col("mode", sa.Text()), _col("venue", sa.Text()),
        _col("client_order_id", sa.String(64)), _col("created_at", TSTZ),
        sa.PrimaryKeyConstraint("mode", "venue", "client_order_id", name="pk_order_keys"),
    )  # fmt: skip

    old = _retire("fills", "0001", [n for n, _ in FILL_INDEXES],
                  ["uq_fills_mode_venue_venue_trade_id", "pk_fills"])
    _create_partitioned_fills()
    _create_months_of(old, "fills", "ts")
    _copy(old, "fills", FILL_COLS)
    op.execute(f"INSERT INTO fill_keys SELECT mode, venue, venue_trade_id FROM {old}")
    op.drop_table(old)

    old = _retire("orders", "0001", [n for n, _ in ORDER_INDEXES],
                  ["uq_orders_mode_venue_client_order_id", "pk_orders"])
    _create_partitioned_orders()
    _create_months_of(old, "orders", "created_at")
    _copy(old, "orders", ORDER_COLS)
    op.execute(f"INSERT INTO order_keys SELECT mode, venue, client_order_id, created_at FROM {old}")
    op.drop_table(old)

    partitions.ensure_partitions(op.get_bind(), MONTHS_AHEAD)


def _create_tables() -> None:
    op.create_table(
        "position_history", _id(), _col("mode", sa.Text()), _col("session", sa.Text()),
        _col("venue", sa.Text()), _col("symbol", sa.Text()), _col("quantity", MONEY),
        _col("avg_price", MONEY), _col("realized_pnl", MONEY), _col("fees", MONEY),
        _col("venue_trade_id", sa.Text()), _col("stream_seq", sa.BigInteger(), null=True),
        _col("ts", TSTZ),
        sa.PrimaryKeyConstraint("id", name="pk_position_history"),
    )  # fmt: skip
    op.create_index("ix_position_history_mode_session_ts", "position_history",
                    ["mode", "session", "ts"])
    op.create_index("ix_position_history_symbol_ts", "position_history", ["symbol", "ts"])
    op.create_table(
        "equity_history", _id(), _col("mode", sa.Text()), _col("session", sa.Text()),
        _col("ts", TSTZ), _col("equity", MONEY), _col("realized", MONEY),
        _col("unrealized", MONEY),
        sa.PrimaryKeyConstraint("id", name="pk_equity_history"),
    )  # fmt: skip
    op.create_index("ix_equity_history_mode_session_ts", "equity_history",
                    ["mode", "session", "ts"])
    op.create_table(
        "intents", _id(), _col("mode", sa.Text()), _col("session", sa.Text()),
        _col("intent_id", sa.Text()), _col("trade_id", sa.Text()), _col("symbol", sa.Text()),
        _col("action", sa.String(8)), _col("buy_venue", sa.Text()),
        _col("sell_venue", sa.Text()), _col("quantity", MONEY), _col("buy_price", MONEY),
        _col("sell_price", MONEY), _col("net_spread_bps", MONEY),
        _col("reason", sa.Text(), default="''"), _col("ts", TSTZ),
        _col("origin_ts", sa.BigInteger(), default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_intents"),
        sa.UniqueConstraint("mode", "intent_id", name="uq_intents_mode_intent_id"),
    )  # fmt: skip
    op.create_index("ix_intents_session_ts", "intents", ["session", "ts"])
    op.create_index("ix_intents_trade_id", "intents", ["trade_id"])
    op.create_table(
        "slippage_analysis", _id(), _col("mode", sa.Text()), _col("session", sa.Text()),
        _col("venue", sa.Text()), _col("symbol", sa.Text()),
        _col("client_order_id", sa.String(64)), _col("venue_trade_id", sa.Text()),
        _col("intent_id", sa.Text()), _col("trade_id", sa.Text()), _col("side", sa.String(4)),
        _col("quantity", MONEY), _col("expected_price", MONEY), _col("realized_price", MONEY),
        _col("slippage_bps", MONEY), _col("slippage_quote", MONEY), _col("ts", TSTZ),
        sa.PrimaryKeyConstraint("id", name="pk_slippage_analysis"),
        sa.UniqueConstraint("mode", "venue", "venue_trade_id",
                            name="uq_slippage_analysis_mode_venue_venue_trade_id"),
    )  # fmt: skip
    op.create_index("ix_slippage_analysis_session_ts", "slippage_analysis", ["session", "ts"])
    op.create_index("ix_slippage_analysis_symbol_ts", "slippage_analysis", ["symbol", "ts"])
    op.create_table(
        "diagnostics", _id(), _col("mode", sa.Text()), _col("session", sa.Text()),
        _col("component", sa.Text()), _col("kind", sa.Text()),
        _col("level", sa.String(16), default="'info'"), _col("symbol", sa.Text(), default="''"),
        _col("venue", sa.Text(), default="''"), _col("message", sa.Text(), default="''"),
        _json("data", "'{}'::jsonb"), _col("ts", TSTZ),
        sa.PrimaryKeyConstraint("id", name="pk_diagnostics"),
    )  # fmt: skip
    op.create_index("ix_diagnostics_kind_ts", "diagnostics", ["kind", "ts"])
    op.create_index("ix_diagnostics_mode_session_ts", "diagnostics", ["mode", "session", "ts"])
    op.create_table(
        "tuning_results", _id(), _col("run_id", sa.Text()),
        _col("strategy", sa.Text(), default="''"), _col("symbol", sa.Text(), default="''"),
        _json("parameters"), _json("metrics", "'{}'::jsonb"),
        _col("score", sa.Float(), null=True), _col("period_start", TSTZ, null=True),
        _col("period_end", TSTZ, null=True), _col("created_at", TSTZ, default="now()"),
        sa.PrimaryKeyConstraint("id", name="pk_tuning_results"),
    )  # fmt: skip
    op.create_index("ix_tuning_results_run_id", "tuning_results", ["run_id"])
    op.create_index("ix_tuning_results_strategy_symbol_created_at", "tuning_results",
                    ["strategy", "symbol", "created_at"])


def _snapshot_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["snapshot_id"], ["session_snapshots.snapshot_id"],
        name=f"fk_{table}_snapshot_id_session_snapshots", ondelete="CASCADE",
    )  # fmt: skip


def _create_snapshot_tables() -> None:
    op.create_table(
        "session_snapshots", _id(), _col("snapshot_id", sa.Text()), _col("mode", sa.Text()),
        _col("session", sa.Text()), _col("component", sa.Text()), _col("reason", sa.Text()),
        _col("taken_at", TSTZ), _col("exec_seq", sa.BigInteger()), _col("checksum", sa.Text()),
        _json("payload"), _col("status", sa.Text(), default="'stored'"),
        _col("invalid_reason", sa.Text(), default="''"), _col("created_at", TSTZ, default="now()"),
        sa.PrimaryKeyConstraint("id", name="pk_session_snapshots"),
        sa.UniqueConstraint("snapshot_id", name="uq_session_snapshots_snapshot_id"),
    )  # fmt: skip
    op.create_index("ix_session_snapshots_mode_session_component_taken_at", "session_snapshots",
                    ["mode", "session", "component", "taken_at"])
    op.create_index("ix_session_snapshots_status_created_at", "session_snapshots",
                    ["status", "created_at"])
    op.create_table(
        "position_snapshots", _id(), _col("snapshot_id", sa.Text()), _col("venue", sa.Text()),
        _col("symbol", sa.Text()), _col("quantity", MONEY), _col("avg_price", MONEY),
        _col("realized_pnl", MONEY), _col("fees", MONEY), _col("fills", sa.Integer()),
        _snapshot_fk("position_snapshots"),
        sa.PrimaryKeyConstraint("id", name="pk_position_snapshots"),
    )  # fmt: skip
    op.create_table(
        "metrics_snapshots", _id(), _col("snapshot_id", sa.Text()), _col("scope", sa.String(16)),
        _col("symbol", sa.Text(), default="''"), _col("realized_pnl", MONEY),
        _col("trades", sa.Integer()), _col("wins", sa.Integer()), _col("losses", sa.Integer()),
        _col("gross_profit", MONEY, null=True), _col("gross_loss", MONEY, null=True),
        _col("peak", MONEY, null=True), _col("max_drawdown", MONEY, null=True),
        _snapshot_fk("metrics_snapshots"),
        sa.PrimaryKeyConstraint("id", name="pk_metrics_snapshots"),
    )  # fmt: skip
    op.create_table(
        "risk_guard_snapshots", _id(), _col("snapshot_id", sa.Text()), _col("day", sa.Integer()),
        _col("daily_pnl", MONEY), _json("state"),
        _snapshot_fk("risk_guard_snapshots"),
        sa.PrimaryKeyConstraint("id", name="pk_risk_guard_snapshots"),
    )  # fmt: skip
    for table in ("position_snapshots", "metrics_snapshots", "risk_guard_snapshots"):
        op.create_index(f"ix_{table}_snapshot_id", table, ["snapshot_id"])


def _create_catalog_tables() -> None:
    op.create_table(
        "strategies", _id(), _col("name", sa.Text()),
        _col("kind", sa.Text(), default="'spread_arbitrage'"), _json("parameters", "'{}'::jsonb"),
        _col("enabled", sa.Boolean(), default="true"), _col("created_at", TSTZ, default="now()"),
        _col("updated_at", TSTZ, default="now()"),
        sa.PrimaryKeyConstraint("id", name="pk_strategies"),
        sa.UniqueConstraint("name", name="uq_strategies_name"),
    )  # fmt: skip
    op.create_table(
        "portfolios", _id(), _col("name", sa.Text()),
        _col("parent_id", sa.BigInteger(), null=True), _json("parameters", "'{}'::jsonb"),
        _col("created_at", TSTZ, default="now()"),
        sa.ForeignKeyConstraint(["parent_id"], ["portfolios.id"],
                                name="fk_portfolios_parent_id_portfolios"),
        sa.PrimaryKeyConstraint("id", name="pk_portfolios"),
        sa.UniqueConstraint("name", name="uq_portfolios_name"),
    )  # fmt: skip
    op.create_index("ix_portfolios_parent_id", "portfolios", ["parent_id"])
    op.create_table(
        "portfolio_rules", _id(), _col("portfolio_id", sa.BigInteger()), _col("kind", sa.Text()),
        _json("parameters", "'{}'::jsonb"), _col("enabled", sa.Boolean(), default="true"),
        _col("created_at", TSTZ, default="now()"),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"],
                                name="fk_portfolio_rules_portfolio_id_portfolios",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_portfolio_rules"),
    )  # fmt: skip
    op.create_index("ix_portfolio_rules_portfolio_id", "portfolio_rules", ["portfolio_id"])
    op.create_table(
        "strategy_portfolio_map", _col("strategy_id", sa.BigInteger()),
        _col("portfolio_id", sa.BigInteger()), _col("weight", MONEY, default="1"),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"],
                                name="fk_strategy_portfolio_map_portfolio_id_portfolios",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["strategy_id"], ["strategies.id"],
                                name="fk_strategy_portfolio_map_strategy_id_strategies",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("strategy_id", "portfolio_id", name="pk_strategy_portfolio_map"),
    )  # fmt: skip
    op.create_index("ix_strategy_portfolio_map_portfolio_id", "strategy_portfolio_map",
                    ["portfolio_id"])


# ------------------------------------------------------------------ downgrade


def downgrade() -> None:
    _online_only()
    # Back to plain tables with their unique constraints (stream_seq is dropped). Dropping a
    # partitioned table drops its partitions.
    old = _retire("fills", "0002", [n for n, _ in FILL_INDEXES + FILL_INDEXES_NEW], ["pk_fills"])
    _create_flat_fills()
    _copy(old, "fills", FILL_COLS)
    op.drop_table(old)

    old = _retire("orders", "0002",
                  [n for n, _ in ORDER_INDEXES + ORDER_INDEXES_NEW + ORDER_OPEN_INDEXES],
                  ["pk_orders"])
    _create_flat_orders()
    _copy(old, "orders", ORDER_COLS)
    op.drop_table(old)

    for table in (
        "order_keys", "fill_keys", "strategy_portfolio_map", "portfolio_rules", "portfolios",
        "strategies", "risk_guard_snapshots", "metrics_snapshots", "position_snapshots",
        "session_snapshots", "tuning_results", "diagnostics", "slippage_analysis", "intents",
        "equity_history", "position_history",
    ):  # fmt: skip
        op.drop_table(table)  # their indexes go with them

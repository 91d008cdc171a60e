"""Ledger: sessions, orders (+ status history), fills, positions, balances, recon runs,
discrepancies.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-22

Remember: add the new revision to ``arb_common.ledger.REVISIONS`` (HEAD).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "balances",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("free", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column(
            "locked",
            sa.Numeric(precision=38, scale=18),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("source", sa.Text(), server_default=sa.text("'venue'"), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balances")),
    )
    op.create_index(
        op.f("ix_balances_venue_asset_ts"), "balances", ["venue", "asset", "ts"], unique=False
    )
    op.create_table(
        "discrepancies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("resolution", sa.Text(), server_default=sa.text("'recorded'"), nullable=False),
        sa.Column("client_order_id", sa.Text(), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discrepancies")),
    )
    op.create_index(op.f("ix_discrepancies_run_id"), "discrepancies", ["run_id"], unique=False)
    op.create_index(
        op.f("ix_discrepancies_venue_ts"), "discrepancies", ["venue", "ts"], unique=False
    )
    op.create_table(
        "fills",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("session", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("venue_order_id", sa.Text(), nullable=True),
        sa.Column("venue_trade_id", sa.Text(), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("price", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("fee", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("fee_asset", sa.Text(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("intent_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("trade_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "ingested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint(
            "mode", "venue", "venue_trade_id", name=op.f("uq_fills_mode_venue_venue_trade_id")
        ),
    )
    op.create_index(
        op.f("ix_fills_mode_venue_client_order_id"),
        "fills",
        ["mode", "venue", "client_order_id"],
        unique=False,
    )
    op.create_index(op.f("ix_fills_session_ts"), "fills", ["session", "ts"], unique=False)
    op.create_index(op.f("ix_fills_symbol_ts"), "fills", ["symbol", "ts"], unique=False)
    op.create_index(op.f("ix_fills_trade_id"), "fills", ["trade_id"], unique=False)
    op.create_table(
        "order_status_history",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("session", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("filled_quantity", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("msg_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_status_history")),
        sa.UniqueConstraint(
            "mode",
            "venue",
            "client_order_id",
            "status",
            name=op.f("uq_order_status_history_mode_venue_client_order_id_status"),
        ),
    )
    op.create_index(
        op.f("ix_order_status_history_session_ts"),
        "order_status_history",
        ["session", "ts"],
        unique=False,
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("session", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("venue_order_id", sa.Text(), nullable=True),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column(
            "filled_quantity",
            sa.Numeric(precision=38, scale=18),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("avg_price", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("intent_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("trade_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "mode", "venue", "client_order_id", name=op.f("uq_orders_mode_venue_client_order_id")
        ),
    )
    op.create_index(
        op.f("ix_orders_session_created_at"), "orders", ["session", "created_at"], unique=False
    )
    op.create_index(
        op.f("ix_orders_symbol_created_at"), "orders", ["symbol", "created_at"], unique=False
    )
    op.create_index(op.f("ix_orders_trade_id"), "orders", ["trade_id"], unique=False)
    op.create_table(
        "positions",
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("session", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column(
            "quantity",
            sa.Numeric(precision=38, scale=18),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column(
            "avg_price",
            sa.Numeric(precision=38, scale=18),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column(
            "realized_pnl",
            sa.Numeric(precision=38, scale=18),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column(
            "fees", sa.Numeric(precision=38, scale=18), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mode", "session", "venue", "symbol", name=op.f("pk_positions")),
    )
    op.create_index(
        op.f("ix_positions_symbol_updated_at"), "positions", ["symbol", "updated_at"], unique=False
    )
    op.create_table(
        "recon_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_runs")),
        sa.UniqueConstraint("venue", "run_id", name=op.f("uq_recon_runs_venue_run_id")),
    )
    op.create_index(
        op.f("ix_recon_runs_venue_started_at"), "recon_runs", ["venue", "started_at"], unique=False
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_index(op.f("ix_recon_runs_venue_started_at"), table_name="recon_runs")
    op.drop_table("recon_runs")
    op.drop_index(op.f("ix_positions_symbol_updated_at"), table_name="positions")
    op.drop_table("positions")
    op.drop_index(op.f("ix_orders_trade_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_symbol_created_at"), table_name="orders")
    op.drop_index(op.f("ix_orders_session_created_at"), table_name="orders")
    op.drop_table("orders")
    op.drop_index(op.f("ix_order_status_history_session_ts"), table_name="order_status_history")
    op.drop_table("order_status_history")
    op.drop_index(op.f("ix_fills_trade_id"), table_name="fills")
    op.drop_index(op.f("ix_fills_symbol_ts"), table_name="fills")
    op.drop_index(op.f("ix_fills_session_ts"), table_name="fills")
    op.drop_index(op.f("ix_fills_mode_venue_client_order_id"), table_name="fills")
    op.drop_table("fills")
    op.drop_index(op.f("ix_discrepancies_venue_ts"), table_name="discrepancies")
    op.drop_index(op.f("ix_discrepancies_run_id"), table_name="discrepancies")
    op.drop_table("discrepancies")
    op.drop_index(op.f("ix_balances_venue_asset_ts"), table_name="balances")
    op.drop_table("balances")

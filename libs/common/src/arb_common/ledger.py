"""The PostgreSQL ledger: SQLAlchemy 2 models shared by ``state`` (writer) and ``reconciler``.

Schema changes only through Alembic (``services/state/migrations``). Every migration bumps
:data:`HEAD` here, and services refuse to start against an older database with one clear
line (:func:`check_schema_current`).

Money and quantities are ``NUMERIC(38,18)`` (``Decimal`` in Python); times are
``timestamptz`` (timezone-aware UTC ``datetime``); parameters and documents are ``JSONB``.
``mode`` is part of every business key, so paper rows can never be mistaken for live ones.

``fills`` and ``orders`` are partitioned by month (``ts`` / ``created_at``; see
``arb_state.partitions``). PostgreSQL only enforces a unique constraint on a partitioned
table if it contains the partition key, so their business keys live in the unpartitioned key
tables :class:`FillKey` and :class:`OrderKey`, written in the same transaction as the row.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

# Alembic revisions in order; HEAD is the newest. Bump both with each migration.
REVISIONS: tuple[str, ...] = ("0001_ledger", "0002_memory", "0003_paper_balances")
HEAD = REVISIONS[-1]

MIGRATE_HINT = "run `alembic -c services/state/alembic.ini upgrade head` (or `make migrate`)"

Money = Numeric(38, 18, asdecimal=True)
TsTz = DateTime(timezone=True)

# Open (non-terminal) order statuses, as in docs/CONTRACTS.md.
OPEN_STATUSES: tuple[str, ...] = ("NEW", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "UNKNOWN")
# The WHERE clause of the partial "open orders only" indexes.
OPEN_ORDERS_SQL = "status IN ({})".format(", ".join(f"'{s}'" for s in OPEN_STATUSES))

# Tables partitioned by month: table -> partition key column.
PARTITIONED: dict[str, str] = {"fills": "ts", "orders": "created_at"}

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {Decimal: Money, datetime: TsTz, str: Text}


class SessionRow(Base):
    """One trading session (``ARB_SESSION``); ``status`` is ``running`` / ``stopped``."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(primary_key=True)
    mode: Mapped[str]
    started_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(server_default=text("'running'"))


class Order(Base):
    """Latest known state of one order; status only moves forward in the lifecycle.

    Partitioned by month of ``created_at`` (the first event seen of the order); unique on
    (mode, venue, client_order_id) through :class:`OrderKey`.
    """

    __tablename__ = "orders"
    __table_args__ = (
        Index(None, "mode", "venue", "client_order_id"),
        Index(None, "session", "created_at"),
        Index(None, "symbol", "created_at"),
        Index(None, "trade_id"),
        Index("ix_orders_open_mode_venue", "mode", "venue",
              postgresql_where=text(OPEN_ORDERS_SQL)),
        Index("ix_orders_open_session_created_at", "session", "created_at",
              postgresql_where=text(OPEN_ORDERS_SQL)),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    # The primary key of a partitioned table must contain the partition key.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    venue: Mapped[str]
    symbol: Mapped[str]
    client_order_id: Mapped[str] = mapped_column(String(64))
    venue_order_id: Mapped[str | None]
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal]
    filled_quantity: Mapped[Decimal] = mapped_column(server_default=text("0"))
    avg_price: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(String(20))
    intent_id: Mapped[str] = mapped_column(server_default=text("''"))
    trade_id: Mapped[str] = mapped_column(server_default=text("''"))
    reason: Mapped[str] = mapped_column(server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(primary_key=True)
    updated_at: Mapped[datetime]


class OrderKey(Base):
    """Unique key of an order (unpartitioned) → the ``created_at`` its ``orders`` row has."""

    __tablename__ = "order_keys"

    mode: Mapped[str] = mapped_column(primary_key=True)
    venue: Mapped[str] = mapped_column(primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]


class OrderStatusHistory(Base):
    """One row per distinct status an order went through (first time seen)."""

    __tablename__ = "order_status_history"
    __table_args__ = (
        UniqueConstraint("mode", "venue", "client_order_id", "status"),
        Index(None, "session", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    venue: Mapped[str]
    client_order_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    filled_quantity: Mapped[Decimal]
    reason: Mapped[str] = mapped_column(server_default=text("''"))
    msg_id: Mapped[str] = mapped_column(server_default=text("''"))
    ts: Mapped[datetime]


class Fill(Base):
    """One execution (venue trade) of one of our orders.

    Partitioned by month of ``ts``; unique on (mode, venue, venue_trade_id) through
    :class:`FillKey`. ``stream_seq`` is the EXEC stream sequence it arrived with (NULL for
    rows written outside the bus path).
    """

    __tablename__ = "fills"
    __table_args__ = (
        Index(None, "session", "ts"),
        Index(None, "symbol", "ts"),
        Index(None, "trade_id"),
        Index(None, "mode", "venue", "client_order_id"),
        Index(None, "mode", "session", "stream_seq"),
        {"postgresql_partition_by": "RANGE (ts)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    venue: Mapped[str]
    symbol: Mapped[str]
    client_order_id: Mapped[str] = mapped_column(String(64))
    venue_order_id: Mapped[str | None]
    venue_trade_id: Mapped[str]
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal]
    price: Mapped[Decimal]
    fee: Mapped[Decimal]
    fee_asset: Mapped[str]
    ts: Mapped[datetime] = mapped_column(primary_key=True)
    intent_id: Mapped[str] = mapped_column(server_default=text("''"))
    trade_id: Mapped[str] = mapped_column(server_default=text("''"))
    ingested_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)


class FillKey(Base):
    """Unique key of a fill (unpartitioned): the dedupe of redelivered fill events."""

    __tablename__ = "fill_keys"

    mode: Mapped[str] = mapped_column(primary_key=True)
    venue: Mapped[str] = mapped_column(primary_key=True)
    venue_trade_id: Mapped[str] = mapped_column(primary_key=True)


class Position(Base):
    """Average-cost position per (mode, session, venue, symbol); quantity is signed."""

    __tablename__ = "positions"
    __table_args__ = (Index(None, "symbol", "updated_at"),)

    mode: Mapped[str] = mapped_column(primary_key=True)
    session: Mapped[str] = mapped_column(primary_key=True)
    venue: Mapped[str] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(primary_key=True)
    quantity: Mapped[Decimal] = mapped_column(server_default=text("0"))
    avg_price: Mapped[Decimal] = mapped_column(server_default=text("0"))
    realized_pnl: Mapped[Decimal] = mapped_column(server_default=text("0"))
    fees: Mapped[Decimal] = mapped_column(server_default=text("0"))  # quote-asset fees booked
    updated_at: Mapped[datetime]


class PositionHistory(Base):
    """The position after each change: one row per fill that moved it (in apply order)."""

    __tablename__ = "position_history"
    __table_args__ = (
        Index(None, "mode", "session", "ts"),
        Index(None, "symbol", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    venue: Mapped[str]
    symbol: Mapped[str]
    quantity: Mapped[Decimal]
    avg_price: Mapped[Decimal]
    realized_pnl: Mapped[Decimal]
    fees: Mapped[Decimal]
    venue_trade_id: Mapped[str]  # the fill that made this change
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)
    ts: Mapped[datetime]  # the fill's time


class EquityHistory(Base):
    """Equity of one session over time (realized + unrealized, quote asset)."""

    __tablename__ = "equity_history"
    __table_args__ = (Index(None, "mode", "session", "ts"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    ts: Mapped[datetime]
    equity: Mapped[Decimal]
    realized: Mapped[Decimal]
    unrealized: Mapped[Decimal]


class IntentRow(Base):
    """A strategy decision (``strat.intent.<symbol>``), as published."""

    __tablename__ = "intents"
    __table_args__ = (
        UniqueConstraint("mode", "intent_id"),
        Index(None, "session", "ts"),
        Index(None, "trade_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    intent_id: Mapped[str]
    trade_id: Mapped[str]
    symbol: Mapped[str]
    action: Mapped[str] = mapped_column(String(8))
    buy_venue: Mapped[str]
    sell_venue: Mapped[str]
    quantity: Mapped[Decimal]
    buy_price: Mapped[Decimal]
    sell_price: Mapped[Decimal]
    net_spread_bps: Mapped[Decimal]
    reason: Mapped[str] = mapped_column(server_default=text("''"))
    ts: Mapped[datetime]
    origin_ts: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))  # ns


class SlippageAnalysis(Base):
    """Expected (intent) versus realized (fill) price; ``slippage_bps`` > 0 = worse."""

    __tablename__ = "slippage_analysis"
    __table_args__ = (
        UniqueConstraint("mode", "venue", "venue_trade_id"),
        Index(None, "symbol", "ts"),
        Index(None, "session", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    venue: Mapped[str]
    symbol: Mapped[str]
    client_order_id: Mapped[str] = mapped_column(String(64))
    venue_trade_id: Mapped[str]
    intent_id: Mapped[str]
    trade_id: Mapped[str]
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal]
    expected_price: Mapped[Decimal]
    realized_price: Mapped[Decimal]
    slippage_bps: Mapped[Decimal]
    slippage_quote: Mapped[Decimal]
    ts: Mapped[datetime]


# The one row per paper/shadow account and asset (``balances`` with source ``ledger``).
LEDGER_BALANCES_SQL = "source = 'ledger'"


class Balance(Base):
    """A balance, by ``source``:

    - ``venue``: one observation of a venue account (its REST truth, written by the
      reconciler on each read); ``mode`` is ``live`` — the real account, whichever mode read it;
    - ``ledger``: a paper or shadow account (``mode`` paper/shadow, ``session``), one row per
      (mode, session, venue, asset) kept current by the state service from EXEC: the latest
      ``exec.balance`` snapshot plus every fill after it. ``stream_seq`` is the EXEC sequence
      of the last event applied to the row (a redelivered event at or below it changes
      nothing).
    """

    __tablename__ = "balances"
    __table_args__ = (
        Index(None, "venue", "asset", "ts"),
        Index("uq_balances_ledger_mode_session_venue_asset", "mode", "session", "venue",
              "asset", unique=True, postgresql_where=text(LEDGER_BALANCES_SQL)),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    venue: Mapped[str]
    asset: Mapped[str]
    free: Mapped[Decimal]
    locked: Mapped[Decimal] = mapped_column(server_default=text("0"))
    source: Mapped[str] = mapped_column(server_default=text("'venue'"))
    ts: Mapped[datetime]
    mode: Mapped[str] = mapped_column(server_default=text("'live'"))
    session: Mapped[str] = mapped_column(server_default=text("''"))
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)


class ReconRun(Base):
    """One reconciliation run of one venue (written by the reconciler)."""

    __tablename__ = "recon_runs"
    __table_args__ = (UniqueConstraint("venue", "run_id"), Index(None, "venue", "started_at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    venue: Mapped[str]
    run_id: Mapped[str]
    started_at: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool]
    error: Mapped[str] = mapped_column(server_default=text("''"))


class DiscrepancyRow(Base):
    """One difference between the ledger and a venue, found by a recon run."""

    __tablename__ = "discrepancies"
    __table_args__ = (Index(None, "run_id"), Index(None, "venue", "ts"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str]
    venue: Mapped[str]
    kind: Mapped[str]
    detail: Mapped[str]
    resolution: Mapped[str] = mapped_column(server_default=text("'recorded'"))
    client_order_id: Mapped[str | None]
    ts: Mapped[datetime]


# ------------------------------------------------------------------ snapshots


class SessionSnapshot(Base):
    """One stored snapshot document (``arb_common.snapshots.Snapshot``) and its validity."""

    __tablename__ = "session_snapshots"
    __table_args__ = (
        Index(None, "mode", "session", "component", "taken_at"),
        Index(None, "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(unique=True)
    mode: Mapped[str]
    session: Mapped[str]
    component: Mapped[str]
    reason: Mapped[str]
    taken_at: Mapped[datetime]
    exec_seq: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(server_default=text("'stored'"))  # stored / invalid
    invalid_reason: Mapped[str] = mapped_column(server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


_SNAPSHOT_FK = "session_snapshots.snapshot_id"


class PositionSnapshot(Base):
    __tablename__ = "position_snapshots"
    __table_args__ = (Index(None, "snapshot_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey(_SNAPSHOT_FK, ondelete="CASCADE"))
    venue: Mapped[str]
    symbol: Mapped[str]
    quantity: Mapped[Decimal]
    avg_price: Mapped[Decimal]
    realized_pnl: Mapped[Decimal]
    fees: Mapped[Decimal]
    fills: Mapped[int] = mapped_column(Integer)


class MetricsSnapshot(Base):
    """Per-symbol (``scope='symbol'``) or portfolio (``scope='portfolio'``, symbol ``''``)."""

    __tablename__ = "metrics_snapshots"
    __table_args__ = (Index(None, "snapshot_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey(_SNAPSHOT_FK, ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(16))
    symbol: Mapped[str] = mapped_column(server_default=text("''"))
    realized_pnl: Mapped[Decimal]
    trades: Mapped[int] = mapped_column(Integer)
    wins: Mapped[int] = mapped_column(Integer)
    losses: Mapped[int] = mapped_column(Integer)
    gross_profit: Mapped[Decimal | None]  # symbol scope
    gross_loss: Mapped[Decimal | None]  # symbol scope
    peak: Mapped[Decimal | None]  # portfolio scope
    max_drawdown: Mapped[Decimal | None]  # portfolio scope


class RiskGuardSnapshot(Base):
    __tablename__ = "risk_guard_snapshots"
    __table_args__ = (Index(None, "snapshot_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey(_SNAPSHOT_FK, ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)
    daily_pnl: Mapped[Decimal]
    state: Mapped[dict[str, Any]] = mapped_column(JSONB)  # RiskGuard.get_state()


# ------------------------------------------------------------------ diagnostics, research


class Diagnostic(Base):
    """A notable runtime observation (a service's self-report, a detected anomaly)."""

    __tablename__ = "diagnostics"
    __table_args__ = (
        Index(None, "mode", "session", "ts"),
        Index(None, "kind", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    mode: Mapped[str]
    session: Mapped[str]
    component: Mapped[str]
    kind: Mapped[str]
    level: Mapped[str] = mapped_column(String(16), server_default=text("'info'"))
    symbol: Mapped[str] = mapped_column(server_default=text("''"))
    venue: Mapped[str] = mapped_column(server_default=text("''"))
    message: Mapped[str] = mapped_column(server_default=text("''"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    ts: Mapped[datetime]


class TuningResult(Base):
    """One evaluated parameter set of a tuning run (e.g. a backtest sweep)."""

    __tablename__ = "tuning_results"
    __table_args__ = (
        Index(None, "run_id"),
        Index(None, "strategy", "symbol", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str]
    strategy: Mapped[str] = mapped_column(server_default=text("''"))
    symbol: Mapped[str] = mapped_column(server_default=text("''"))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    score: Mapped[float | None] = mapped_column(Float)
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class Strategy(Base):
    __tablename__ = "strategies"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[str] = mapped_column(server_default=text("'spread_arbitrage'"))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class Portfolio(Base):
    """A node of the portfolio tree (``parent_id`` NULL = a root)."""

    __tablename__ = "portfolios"
    __table_args__ = (Index(None, "parent_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(unique=True)
    # A parent with children cannot be deleted (no silent cascade through the tree).
    parent_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("portfolios.id"))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class PortfolioRule(Base):
    """A rule applied to a portfolio (e.g. ``max_exposure``), parameters as JSONB."""

    __tablename__ = "portfolio_rules"
    __table_args__ = (Index(None, "portfolio_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    portfolio_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("portfolios.id", ondelete="CASCADE"))
    kind: Mapped[str]
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class StrategyPortfolioMap(Base):
    """Which strategy belongs to which portfolio, with its capital weight."""

    __tablename__ = "strategy_portfolio_map"
    __table_args__ = (Index(None, "portfolio_id"),)

    strategy_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("portfolios.id", ondelete="CASCADE"), primary_key=True)
    weight: Mapped[Decimal] = mapped_column(server_default=text("1"))


# Short aliases for readers who expect the plain names.
Session = SessionRow
Discrepancy = DiscrepancyRow

# ------------------------------------------------------------------ schema revision check

_REVISION_SQL = text("SELECT version_num FROM alembic_version")


def _revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(_REVISION_SQL).first()
    return None if row is None else str(row[0])


def require_revision(current: str | None) -> None:
    """Raise :class:`ConfigError` unless ``current`` is :data:`HEAD`."""
    if current == HEAD:
        return
    if current is not None and current not in REVISIONS:
        raise ConfigError(
            f"database revision {current} is not known to this code (head {HEAD}): "
            "the database is newer than this build; deploy the matching version"
        )
    shown = current if current is not None else "<none>"
    raise ConfigError(f"database revision {shown} is behind head {HEAD}: {MIGRATE_HINT}")


def check_schema_current(engine: Engine) -> None:
    """Refuse to run against a database whose Alembic revision is not :data:`HEAD`."""
    with engine.connect() as conn:
        current = _revision(conn)
    require_revision(current)


async def check_schema_current_async(engine: AsyncEngine) -> None:
    """:func:`check_schema_current` for an ``AsyncEngine``."""
    async with engine.connect() as conn:
        current = await conn.run_sync(_revision)
    require_revision(current)


__all__ = [
    "HEAD",
    "LEDGER_BALANCES_SQL",
    "MIGRATE_HINT",
    "OPEN_ORDERS_SQL",
    "OPEN_STATUSES",
    "PARTITIONED",
    "REVISIONS",
    "Balance",
    "Base",
    "Diagnostic",
    "Discrepancy",
    "DiscrepancyRow",
    "EquityHistory",
    "Fill",
    "FillKey",
    "IntentRow",
    "MetricsSnapshot",
    "Order",
    "OrderKey",
    "OrderStatusHistory",
    "Portfolio",
    "PortfolioRule",
    "Position",
    "PositionHistory",
    "PositionSnapshot",
    "ReconRun",
    "RiskGuardSnapshot",
    "Session",
    "SessionRow",
    "SessionSnapshot",
    "SlippageAnalysis",
    "Strategy",
    "StrategyPortfolioMap",
    "TuningResult",
    "check_schema_current",
    "check_schema_current_async",
    "require_revision",
]

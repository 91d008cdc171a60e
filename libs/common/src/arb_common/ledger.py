"""The PostgreSQL ledger: SQLAlchemy 2 models shared by ``state`` (writer) and ``reconciler``.

Schema changes only through Alembic (``services/state/migrations``). Every migration bumps
:data:`HEAD` here, and services refuse to start against an older database with one clear
line (:func:`check_schema_current`).

Money and quantities are ``NUMERIC(38,18)`` (``Decimal`` in Python); times are
``timestamptz`` (timezone-aware UTC ``datetime``). ``mode`` is part of every business key,
so paper rows can never be mistaken for live ones.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

# Alembic revisions in order; HEAD is the newest. Bump both with each migration.
REVISIONS: tuple[str, ...] = ("0001_ledger",)
HEAD = REVISIONS[-1]

MIGRATE_HINT = "run `alembic -c services/state/alembic.ini upgrade head` (or `make migrate`)"

Money = Numeric(38, 18, asdecimal=True)
TsTz = DateTime(timezone=True)

# Open (non-terminal) order statuses, as in docs/CONTRACTS.md.
OPEN_STATUSES: tuple[str, ...] = ("NEW", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "UNKNOWN")

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
    """Latest known state of one order; status only moves forward in the lifecycle."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("mode", "venue", "client_order_id"),
        Index(None, "session", "created_at"),
        Index(None, "symbol", "created_at"),
        Index(None, "trade_id"),
    )

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
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


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
    """One execution (venue trade) of one of our orders."""

    __tablename__ = "fills"
    __table_args__ = (
        UniqueConstraint("mode", "venue", "venue_trade_id"),
        Index(None, "session", "ts"),
        Index(None, "symbol", "ts"),
        Index(None, "trade_id"),
        Index(None, "mode", "venue", "client_order_id"),
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
    ts: Mapped[datetime]
    intent_id: Mapped[str] = mapped_column(server_default=text("''"))
    trade_id: Mapped[str] = mapped_column(server_default=text("''"))
    ingested_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


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


class Balance(Base):
    """A balance observation (``source``: e.g. ``venue`` for REST truth, ``ledger``)."""

    __tablename__ = "balances"
    __table_args__ = (Index(None, "venue", "asset", "ts"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    venue: Mapped[str]
    asset: Mapped[str]
    free: Mapped[Decimal]
    locked: Mapped[Decimal] = mapped_column(server_default=text("0"))
    source: Mapped[str] = mapped_column(server_default=text("'venue'"))
    ts: Mapped[datetime]


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
    "MIGRATE_HINT",
    "OPEN_STATUSES",
    "REVISIONS",
    "Balance",
    "Base",
    "Discrepancy",
    "DiscrepancyRow",
    "Fill",
    "Order",
    "OrderStatusHistory",
    "Position",
    "ReconRun",
    "Session",
    "SessionRow",
    "check_schema_current",
    "check_schema_current_async",
    "require_revision",
]

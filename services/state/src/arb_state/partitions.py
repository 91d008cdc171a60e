"""Monthly partitions of the ledger's partitioned tables (``fills`` by ``ts``, ``orders`` by
``created_at``; :data:`arb_common.ledger.PARTITIONED`).

Each table has one partition per calendar month (UTC), named ``<table>_pYYYY_MM``, and a
``<table>_default`` partition that catches any row outside the created months, so an insert
is never refused. :func:`ensure_partitions` keeps them created from the current month through
``months_ahead`` months ahead; it runs in migration ``0002_memory`` and periodically in the
state service (``ARB_PARTITION_MONTHS_AHEAD``, ``ARB_MAINTENANCE_INTERVAL_S``).

Rows that landed in DEFAULT (a fill from before the created range: a backfill, a replayed old
session, a clock far off) are moved into their own month's partition on the next run: a
month cannot be attached while DEFAULT holds rows of it, so the rows are moved out first, in
the same transaction (``DELETE ... RETURNING`` into a plain table, then ``ATTACH PARTITION``,
which needs only ``SHARE UPDATE EXCLUSIVE`` on the parent, so ingestion keeps going). The
ledger itself is never pruned: no partition is ever dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from arb_common.ledger import PARTITIONED

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key: one maintenance run at a time across state replicas.
_LOCK_KEY = 0x61726270  # "arbp"
# The order in which arb_state.ingest writes the partitioned tables (locks follow it).
_INGEST_ORDER = ("orders", "fills")


def month_of(ts: datetime) -> date:
    """The first day of ``ts``'s month, in UTC."""
    ts = ts.astimezone(UTC)
    return date(ts.year, ts.month, 1)


def add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def default_name(table: str) -> str:
    return f"{table}_default"


def is_partition(name: str) -> bool:
    """True for a partition's table name (``fills_p2026_01``, ``orders_default``)."""
    for table in PARTITIONED:
        rest = name.removeprefix(table + "_")
        if rest == name:
            continue
        if rest == "default":
            return True
        if len(rest) == 8 and rest[0] == "p" and rest[5] == "_":
            return rest[1:5].isdigit() and rest[6:].isdigit()
    return False


def _bound(month: date) -> str:
    return f"{month.isoformat()} 00:00:00+00"


@dataclass
class PartitionReport:
    created: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)  # partition -> rows moved from DEFAULT


def _exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one())


def _columns(conn: Connection, table: str) -> list[str]:
    rows = conn.execute(text(
        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ), {"t": table})  # fmt: skip
    return [r[0] for r in rows]


def ensure_default(conn: Connection, table: str) -> None:
    if not _exists(conn, default_name(table)):
        conn.execute(text(f'CREATE TABLE "{default_name(table)}" PARTITION OF "{table}" DEFAULT'))


def ensure_month(conn: Connection, table: str, month: date) -> int | None:
    """Create ``table``'s partition of ``month`` unless it exists; None if it did, else the
    number of rows moved into it from DEFAULT."""
    name = partition_name(table, month)
    if _exists(conn, name):
        return None
    key, default = PARTITIONED[table], default_name(table)
    lo, hi = _bound(month), _bound(add_months(month, 1))
    # Lock DEFAULT first (before deleting from it), so the ATTACH below never has to upgrade
    # a weaker lock while an ingest transaction waits on a row we deleted.
    conn.execute(text(f'LOCK TABLE "{default}" IN ACCESS EXCLUSIVE MODE'))
    conn.execute(text(
        f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        "INCLUDING STORAGE INCLUDING COMPRESSION)"
    ))  # fmt: skip
    cols = ", ".join(f'"{c}"' for c in _columns(conn, table))
    moved = conn.execute(text(
        f'WITH m AS (DELETE FROM "{default}" WHERE "{key}" >= CAST(:lo AS timestamptz) '
        f'AND "{key}" < CAST(:hi AS timestamptz) RETURNING {cols}) '
        f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM m'
    ), {"lo": lo, "hi": hi}).rowcount  # fmt: skip
    # Builds the parent's indexes on the new partition and checks DEFAULT holds none of it.
    conn.execute(text(
        f"ALTER TABLE \"{table}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{lo}') TO ('{hi}')"
    ))  # fmt: skip
    if moved:
        logger.info("partition created table=%s partition=%s moved_from_default=%d",
                    table, name, moved)
    else:
        logger.info("partition created table=%s partition=%s", table, name)
    return moved


def default_months(conn: Connection, table: str) -> list[date]:
    """The months of the rows that sit in ``table``'s DEFAULT partition."""
    key = PARTITIONED[table]
    rows = conn.execute(text(
        f"SELECT DISTINCT date_trunc('month', \"{key}\", 'UTC')::date "
        f'FROM "{default_name(table)}" ORDER BY 1'
    ))  # fmt: skip
    return [r[0] for r in rows]


def ensure_partitions(
    conn: Connection, months_ahead: int, *, now: datetime | None = None,
    lock_timeout_ms: int | None = None,
) -> PartitionReport:  # fmt: skip
    """Create every partitioned table's DEFAULT partition, its monthly partitions from the
    current month through ``months_ahead`` months ahead, and a partition for every month that
    has rows in DEFAULT (moving them there). Runs in the caller's transaction.

    When there is anything to create, both DEFAULT partitions are locked first, in the order
    the ingest writer touches them (orders, then fills), so the two can never deadlock; the
    writers wait for this transaction only (a few milliseconds, plus moving DEFAULT's rows).
    ``lock_timeout_ms`` bounds that wait (the periodic job sets it, so busy ingestion is
    never stalled for long: the job just tries again next time).
    """
    if months_ahead < 0:
        raise ValueError(f"months_ahead must be >= 0, got {months_ahead}")
    if lock_timeout_ms is not None:
        conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    first = month_of(now or datetime.now(UTC))
    tables = sorted(PARTITIONED, key=_INGEST_ORDER.index)
    for table in tables:
        ensure_default(conn, table)
    todo = {
        table: sorted(m for m in {add_months(first, i) for i in range(months_ahead + 1)}
                      | set(default_months(conn, table))
                      if not _exists(conn, partition_name(table, m)))
        for table in tables
    }  # fmt: skip
    report = PartitionReport()
    if not any(todo.values()):
        return report
    for table in tables:
        conn.execute(text(f'LOCK TABLE "{default_name(table)}" IN ACCESS EXCLUSIVE MODE'))
    for table in tables:
        for month in todo[table]:
            moved = ensure_month(conn, table, month)
            if moved is not None:
                report.created.append(partition_name(table, month))
                if moved:
                    report.moved[partition_name(table, month)] = moved
    return report


def run_maintenance(engine: Engine, months_ahead: int, *, lock_timeout_ms: int = 5000
                    ) -> PartitionReport:
    """:func:`ensure_partitions` in its own transaction (the state service's periodic job)."""
    with engine.begin() as conn:
        return ensure_partitions(conn, months_ahead, lock_timeout_ms=lock_timeout_ms)


def partitions_of(conn: Connection, table: str) -> dict[str, str]:
    """``{partition name: bound expression}`` of ``table`` (for tests and operators)."""
    rows = conn.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass)"
    ), {"t": table})  # fmt: skip
    return {r[0]: r[1] for r in rows}

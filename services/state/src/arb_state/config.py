"""Settings of the state service (``ARB_*`` environment variables)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from arb_common.settings import CommonSettings


class StateSettings(CommonSettings):
    http_port: int = Field(default=8084, ge=1, le=65535)
    # Events per ledger transaction (one JetStream fetch).
    ingest_batch: int = Field(default=256, ge=1, le=4096)
    # Deliveries before a message goes to dlq.EXEC; with the bus backoff (capped at 30 s) 200
    # rides out a PostgreSQL outage of about 100 minutes without losing anything.
    ingest_max_deliver: int = Field(default=200, ge=2, le=10_000)
    # Seconds between Redis hot-state checks (re-sync after an outage or a data loss).
    redis_check_s: float = Field(default=2.0, gt=0, le=300)
    # Seconds between PostgreSQL liveness checks (``/readyz``).
    pg_check_s: float = Field(default=2.0, gt=0, le=300)
    db_pool_size: int = Field(default=5, ge=1, le=100)
    # Monthly partitions of fills/orders kept created ahead of time (and checked this often).
    partition_months_ahead: int = Field(default=3, ge=1, le=24)
    maintenance_interval_s: float = Field(default=3600.0, gt=0, le=86_400)
    # Snapshots: stopped sessions' snapshots older than this are pruned (the ledger never is);
    # every (mode, session, component) keeps at least ``snapshot_keep`` newest snapshots, and a
    # running session at most ``snapshot_keep_running``.
    snapshot_retention_days: float = Field(default=30.0, gt=0)
    snapshot_keep: int = Field(default=3, ge=3, le=1000)
    snapshot_keep_running: int = Field(default=200, ge=3, le=100_000)
    # How long a snapshot load waits for the ledger to have ingested up to its exec_seq.
    snapshot_verify_wait_s: float = Field(default=5.0, ge=0, le=120)
    # Equity history: one row per running session of this mode this often.
    equity_interval_s: float = Field(default=10.0, gt=0, le=3600)
    # Slippage derivation job (fills joined with their intents' expected prices).
    analytics_interval_s: float = Field(default=2.0, gt=0, le=3600)
    # R multiple: a round trip's PnL over this fraction (bps) of its entry notional.
    risk_unit_bps: Decimal = Field(default=Decimal("50"), gt=0)

    @property
    def redis_prefix(self) -> str:
        """Redis key prefix: ``arb``, or ``arb<bus_prefix>`` to isolate a deployment/test."""
        return f"arb{self.bus_prefix}"

    @property
    def database_url_psycopg(self) -> str:
        """``database_url`` with the psycopg 3 driver (plain ``postgresql://`` accepted)."""
        url = self.database_url
        for plain in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

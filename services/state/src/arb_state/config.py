"""Settings of the state service (``ARB_*`` environment variables)."""

from __future__ import annotations

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

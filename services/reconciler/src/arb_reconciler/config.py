"""Reconciler settings (``ARB_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from arb_common.settings import CommonSettings


class ReconcilerSettings(CommonSettings):
    http_port: int = Field(default=8085, ge=1, le=65535)
    # Periodic open-orders check after the startup run.
    recon_interval_s: float = Field(default=10.0, gt=0)
    # A venue or the database not answering within this is a failed run (stay / report).
    venue_timeout_s: float = Field(default=5.0, gt=0)
    db_timeout_s: float = Field(default=5.0, gt=0)
    # Backoff between failed startup runs (exponential with jitter, capped).
    retry_max_s: float = Field(default=10.0, gt=0)

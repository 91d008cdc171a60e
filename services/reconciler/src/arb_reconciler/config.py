"""Reconciler settings (``ARB_*`` environment variables)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

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
    # What to do with orders/trades on a venue that are not ours (a manual trade):
    # ignore (recorded + alerted), adopt (into the ledger as trade_id "external"), halt (new
    # entries on that venue stop until `arbctl ack VENUE`).
    recon_external_policy: Literal["ignore", "adopt", "halt"] = "halt"
    # The venue's trades are audited against the ledger's fills this often (and at start),
    # over a lookback covering the ledger's last activity, at most this far back.
    recon_trades_interval_s: float = Field(default=30.0, gt=0)
    recon_lookback_s: float = Field(default=86_400.0, gt=0)
    # Balances vs the ledger's expectation this often; drift beyond this fraction (on two
    # consecutive checks) halts new entries on the venue.
    recon_balance_interval_s: float = Field(default=60.0, gt=0)
    recon_balance_tolerance: Decimal = Field(default=Decimal("0.000001"), ge=0, lt=1)
    # An order open in the ledger and unknown to the venue is marked CANCELED once older.
    recon_stale_grace_s: float = Field(default=60.0, ge=0)
    # A venue trade younger than this is not called missing yet (on its way to the ledger).
    recon_missing_grace_s: float = Field(default=10.0, ge=0)
    # In-flight orders (NEW, SUBMITTED, UNKNOWN) are checked this often, at most this many
    # venue queries per venue and cycle.
    recon_inflight_interval_s: float = Field(default=3.0, gt=0)
    recon_max_queries: int = Field(default=20, ge=1, le=1000)
    # ... once older than this (before, the executor is still resolving it itself).
    recon_inflight_min_age_s: float = Field(default=15.0, ge=0)

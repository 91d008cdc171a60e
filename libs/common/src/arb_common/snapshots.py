"""Snapshot documents: what a component saves so a restart restores it exactly.

A snapshot is taken by its owner (today: ``strategy``) and stored by the state service
(``ctl.state.snapshot.save``) in PostgreSQL (``session_snapshots`` + ``position_snapshots``
+ ``metrics_snapshots`` + ``risk_guard_snapshots``). Recovery = latest *valid* snapshot →
replay of the EXEC events after ``exec_seq`` → reconciliation against the venues.

The checksum is the SHA-256 of the document's canonical JSON (keys sorted, Decimals as
strings), so a document that went through JSONB and back still verifies, and any change to
a value does not.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any, Literal

import msgspec

SNAPSHOT_VERSION = 1
SnapshotReason = Literal["start", "periodic", "trade_closed", "shutdown", "manual"]


class PositionSnap(msgspec.Struct, kw_only=True, frozen=True):
    """Average-cost position (:mod:`arb_common.positions`) of one (venue, symbol)."""

    venue: str
    symbol: str
    quantity: Decimal
    avg_price: Decimal
    realized_pnl: Decimal
    fees: Decimal
    fills: int  # fills applied to it


class SymbolMetrics(msgspec.Struct, kw_only=True, frozen=True):
    """Closed round trips of one symbol (strategy's trade accounting)."""

    symbol: str
    realized_pnl: Decimal
    trades: int
    wins: int
    losses: int
    gross_profit: Decimal
    gross_loss: Decimal  # positive number


class PortfolioMetrics(msgspec.Struct, kw_only=True, frozen=True):
    realized_pnl: Decimal
    trades: int
    wins: int
    losses: int
    peak: Decimal  # highest cumulative realized PnL seen
    max_drawdown: Decimal  # largest peak-to-trough drop of cumulative realized PnL (>= 0)


class Snapshot(msgspec.Struct, kw_only=True, frozen=True):
    v: int = SNAPSHOT_VERSION
    snapshot_id: str  # deterministic: f"{component}:{mode}:{session}:{exec_seq}:{taken_ts}"
    component: str  # "strategy"
    mode: str
    session: str
    reason: SnapshotReason
    taken_ts: int  # ns
    exec_seq: int  # last EXEC stream sequence applied (0: none)
    positions: list[PositionSnap]
    metrics: list[SymbolMetrics]
    portfolio: PortfolioMetrics
    guard: dict[str, Any]  # RiskGuard.get_state()
    engine: dict[str, Any]  # Engine.get_state()
    pnl: dict[str, Any]  # PnlTracker.get_state()
    seen_fills: list[str] = []  # fill message ids applied recently (bounded)


_encoder = msgspec.json.Encoder(decimal_format="string", order="sorted")
_decoder = msgspec.json.Decoder(Snapshot)


def canonical(snap: Snapshot) -> bytes:
    return _encoder.encode(snap)


def checksum(snap: Snapshot) -> str:
    return hashlib.sha256(canonical(snap)).hexdigest()


def decode_snapshot(data: bytes | str) -> Snapshot:
    """Strict decode (raises ``msgspec.ValidationError`` / ``DecodeError`` saying where)."""
    snap = _decoder.decode(data)
    if snap.v != SNAPSHOT_VERSION:
        raise msgspec.ValidationError(f"unsupported snapshot version {snap.v}")
    return snap


def to_wire(snap: Snapshot) -> dict[str, Any]:
    """The ``ctl.state.snapshot.save`` request body."""
    return {"snapshot": msgspec.to_builtins(snap, order="sorted"), "checksum": checksum(snap)}


def snapshot_id(component: str, mode: str, session: str, exec_seq: int, taken_ts: int) -> str:
    return f"{component}:{mode}:{session}:{exec_seq}:{taken_ts}"

"""Snapshot documents: what a component saves so a restart restores it exactly.

A snapshot is taken by its owner (today: ``strategy``) and stored by the state service
(``ctl.state.snapshot_save``) in PostgreSQL (``session_snapshots`` + ``position_snapshots``
+ ``metrics_snapshots`` + ``risk_guard_snapshots``). Recovery = latest *valid* snapshot →
replay of the EXEC events after ``exec_seq`` → reconciliation against the venues.

The checksum is the SHA-256 of the document's canonical JSON (keys sorted, Decimals as
strings), so a document that went through JSONB and back still verifies, and any change to
a value does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import msgspec

from .errors import DecodeError
from .positions import Replayed

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
    """The ``ctl.state.snapshot_save`` request body."""
    return {"snapshot": msgspec.to_builtins(snap, order="sorted"), "checksum": checksum(snap)}


def snapshot_id(component: str, mode: str, session: str, exec_seq: int, taken_ts: int) -> str:
    return f"{component}:{mode}:{session}:{exec_seq}:{taken_ts}"


# ------------------------------------------------------------------ storage and validation


def to_payload(snap: Snapshot) -> dict[str, Any]:
    """The document as JSON builtins (Decimals as strings): what is stored as JSONB."""
    payload: dict[str, Any] = msgspec.to_builtins(snap, order="sorted")
    return payload


def payload_checksum(payload: Any) -> str:
    """SHA-256 of a stored payload's canonical JSON; equals :func:`checksum` of the document
    it came from (the same encoder: sorted keys, Decimals as strings), even after a JSONB round
    trip, and does not need the payload to decode (a corrupt one simply does not match)."""
    return hashlib.sha256(_encoder.encode(payload)).hexdigest()


def duplicate_keys(snap: Snapshot) -> str | None:
    """A (venue, symbol) position or a symbol's metrics listed twice, else None."""
    seen: set[tuple[str, str]] = set()
    for p in snap.positions:
        if (p.venue, p.symbol) in seen:
            return f"position {p.venue}/{p.symbol} listed twice"
        seen.add((p.venue, p.symbol))
    symbols: set[str] = set()
    for m in snap.metrics:
        if m.symbol in symbols:
            return f"metrics of {m.symbol} listed twice"
        symbols.add(m.symbol)
    return None


def _decimal_map(value: Any, where: str) -> dict[str, Decimal]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    out: dict[str, Decimal] = {}
    for key, raw in value.items():
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise ValueError(f"{where}[{key}] is not a decimal string")
        try:
            out[str(key)] = Decimal(raw)
        except ArithmeticError:
            raise ValueError(f"{where}[{key}] is not a decimal: {raw!r}") from None
    return out


def guard_inconsistency(snap: Snapshot) -> str | None:
    """Check (4) of validation on load: the RiskGuard state and the metrics agree with the
    positions and with each other (``None`` when they do; else what disagrees, first found).

    ``guard.positions[symbol][venue]`` = that position's quantity (missing = 0);
    ``guard.realized[symbol]`` = the symbol metrics' ``realized_pnl`` (missing = 0);
    portfolio realized / trades / wins / losses = the sums over the symbols.
    """
    try:
        raw_positions = snap.guard.get("positions", {})
        if not isinstance(raw_positions, dict):
            raise ValueError("guard.positions is not an object")
        guard_qty = {
            (venue, symbol): qty
            for symbol, venues in raw_positions.items()
            for venue, qty in _decimal_map(venues, f"guard.positions[{symbol}]").items()
        }
        guard_realized = _decimal_map(snap.guard.get("realized", {}), "guard.realized")
    except ValueError as exc:
        return str(exc)
    qty = {(p.venue, p.symbol): p.quantity for p in snap.positions}
    for venue, symbol in sorted(qty.keys() | guard_qty.keys()):
        a, b = qty.get((venue, symbol), Decimal(0)), guard_qty.get((venue, symbol), Decimal(0))
        if a != b:
            return f"guard.positions[{symbol}][{venue}] = {b} but the position holds {a}"
    realized = {m.symbol: m.realized_pnl for m in snap.metrics}
    for symbol in sorted(realized.keys() | guard_realized.keys()):
        a, b = realized.get(symbol, Decimal(0)), guard_realized.get(symbol, Decimal(0))
        if a != b:
            return f"guard.realized[{symbol}] = {b} but the metrics say {a}"
    return _portfolio_inconsistency(snap)


def _portfolio_inconsistency(snap: Snapshot) -> str | None:
    p = snap.portfolio
    sums: dict[str, Decimal | int] = {
        "realized_pnl": sum((m.realized_pnl for m in snap.metrics), Decimal(0)),
        "trades": sum(m.trades for m in snap.metrics),
        "wins": sum(m.wins for m in snap.metrics),
        "losses": sum(m.losses for m in snap.metrics),
    }
    for name, total in sums.items():
        if getattr(p, name) != total:
            return f"portfolio.{name} = {getattr(p, name)} but the symbols sum to {total}"
    return None


# Accounting rounding tolerated when comparing with a replay (see position_mismatch).
ROUNDING = Decimal("1e-12")


def position_mismatch(snap: Snapshot, replayed: Replayed) -> str | None:
    """Check (3) of validation on load: what differs between the document's positions and
    :func:`arb_common.positions.replay` of the fills it covers (None: nothing).

    The fill count is compared exactly; quantity, average price, PnL and fees within
    :data:`ROUNDING`: the ledger rounds to NUMERIC(38,18) once per ingest batch and a producer
    may round per fill (or not at all), which moves the last digits only, while a missed,
    extra or altered fill moves them by many orders of magnitude more. Empty positions
    (no fills, all zero) count as absent.
    """
    mine = {(p.venue, p.symbol): p for p in snap.positions
            if p.fills or p.quantity or p.realized_pnl or p.fees}
    for key in sorted(mine.keys() | replayed.keys()):
        where = f"{key[0]}/{key[1]}"
        if key not in replayed:
            return f"{where}: in the snapshot ({mine[key].fills} fills), no fills in the ledger"
        state, count = replayed[key]
        if key not in mine:
            return f"{where}: {count} fills in the ledger, missing from the snapshot"
        p = mine[key]
        if p.fills != count:
            return f"{where}: {p.fills} fills in the snapshot, {count} in the ledger"
        for name in ("quantity", "avg_price", "realized_pnl", "fees"):
            have, want = getattr(p, name), getattr(state, name)
            if abs(have - want) > ROUNDING:
                return f"{where}: {name} {have} in the snapshot, {want} by the ledger's fills"
    return None


# ------------------------------------------------------------------ request decoding


class _SaveRequest(msgspec.Struct):
    snapshot: msgspec.Raw
    checksum: str


class _LoadRequest(msgspec.Struct):
    component: str
    mode: str
    session: str


def _body(body: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(body, Mapping):
        return msgspec.json.encode(body)
    return body.encode() if isinstance(body, str) else body


def decode_save_request(body: bytes | str | Mapping[str, Any]) -> tuple[Snapshot, str]:
    """A ``ctl.state.snapshot_save`` request → (document, checksum), strictly: raises
    :class:`DecodeError` saying what is wrong and where (msgspec paths, ``$`` = the part named
    first), including a checksum that does not match the document."""
    try:
        req = msgspec.json.decode(_body(body), type=_SaveRequest)
    except msgspec.MsgspecError as exc:
        raise DecodeError(str(exc), "request") from None
    try:
        snap = decode_snapshot(req.snapshot)
    except msgspec.MsgspecError as exc:
        raise DecodeError(str(exc), "snapshot") from None
    if checksum(snap) != req.checksum:
        raise DecodeError(f"{req.checksum!r} does not match the document ({checksum(snap)}); "
                          "canonical JSON is sorted keys, Decimals as strings "
                          "(arb_common.snapshots.checksum)", "checksum")
    for name in ("snapshot_id", "component", "mode", "session"):
        if not getattr(snap, name):
            raise DecodeError(f"`{name}` is empty - at `$.{name}`", "snapshot")
    return snap, req.checksum


def decode_load_request(body: bytes | str | Mapping[str, Any]) -> tuple[str, str, str]:
    """A ``ctl.state.snapshot_load`` request → (component, mode, session), strictly."""
    try:
        req = msgspec.json.decode(_body(body), type=_LoadRequest)
    except msgspec.MsgspecError as exc:
        raise DecodeError(str(exc), "request") from None
    for name in ("component", "mode", "session"):
        if not getattr(req, name):
            raise DecodeError(f"`{name}` is empty - at `$.{name}`", "request")
    return req.component, req.mode, req.session

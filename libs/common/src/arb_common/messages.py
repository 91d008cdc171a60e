"""Typed, versioned message envelope and payloads (msgspec, strict decode).

Wire form (JSON)::

    {"type": "exec.fill", "v": 1, "id": "fill:alpha:12345", "ts": 1700000000000000000,
     "source": "executor", "session": "s1", "mode": "live", "payload": {...}}

``id`` is deterministic from the business key and is also sent as ``Nats-Msg-Id``.
Decimals travel as strings. ``ts`` is nanoseconds since the epoch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

from .errors import DecodeError

Side = Literal["buy", "sell"]
Level = tuple[Decimal, Decimal]  # (price, quantity)


class Envelope(msgspec.Struct, kw_only=True, frozen=True):
    type: str
    v: int
    id: str
    ts: int
    source: str
    session: str
    mode: str
    payload: msgspec.Raw


# ---------------------------------------------------------------- payloads


class Book(msgspec.Struct, kw_only=True, frozen=True):
    """Normalized L2 book (top N levels), best first on both sides."""

    venue: str
    symbol: str
    seq: int  # venue's update id of this book state
    bids: list[Level]
    asks: list[Level]
    venue_ts: int = 0  # venue event time, ms (0 when the venue gives none)
    recv_ts: int = 0  # when the venue frame was received, ns (latency tracing)


class VenueStatus(msgspec.Struct, kw_only=True, frozen=True):
    venue: str
    connected: bool
    reason: str = ""


class Intent(msgspec.Struct, kw_only=True, frozen=True):
    """Buy ``quantity`` on ``buy_venue`` and sell it on ``sell_venue``, now."""

    intent_id: str  # deterministic: f"{trade_id}:{action}"; a leftover's n-th close
    # (arb_strategy.engine.close_intent_id): f"{trade_id}:{n}:close"
    trade_id: str  # one arbitrage round trip (open + close share it)
    symbol: str
    action: Literal["open", "close"]
    buy_venue: str
    sell_venue: str
    quantity: Decimal
    buy_price: Decimal  # expected VWAP walking the book
    sell_price: Decimal
    net_spread_bps: Decimal  # after fees
    reason: str = ""
    origin_ts: int = 0  # recv_ts of the venue frame that triggered it, ns


OrderStatus = Literal[
    "NEW",
    "SUBMITTED",
    "ACKED",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCELED",
    "REJECTED",
    "EXPIRED",
    "UNKNOWN",
]


class OrderEvent(msgspec.Struct, kw_only=True, frozen=True):
    venue: str
    symbol: str
    client_order_id: str
    side: Side
    quantity: Decimal
    filled_quantity: Decimal
    status: OrderStatus
    venue_order_id: str | None = None
    avg_price: Decimal | None = None
    intent_id: str = ""
    trade_id: str = ""
    reason: str = ""
    ts: int = 0  # ns
    origin_ts: int = 0  # ns, copied from the intent (latency tracing)
    # "leg": one of the intent's two legs; "hedge": an order the executor sent to even out
    # the legs' fills (same intent and trade id), see arb_executor.hedge.
    role: Literal["leg", "hedge"] = "leg"


class FillEvent(msgspec.Struct, kw_only=True, frozen=True):
    venue: str
    symbol: str
    client_order_id: str
    venue_trade_id: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    ts: int  # ns
    venue_order_id: str | None = None
    intent_id: str = ""
    trade_id: str = ""
    origin_ts: int = 0


class BalanceSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    """A paper (or shadow) venue's free balances at one point of the EXEC stream.

    Published by the executor on ``exec.balance.<venue>`` once its paper venues are ready (EXEC
    replayed; in shadow, the live account's balances taken), with ``Nats-Expected-Last-Sequence``
    = ``as_of_seq``: everything before it in the stream is in it, nothing else. A paper
    account (mode, session, venue) is its latest snapshot plus every fill after it, in stream
    order: the executor's replay and the ledger (``balances``, source ``ledger``) both fold
    EXEC that way, so they agree."""

    venue: str
    balances: dict[str, Decimal]  # asset -> free
    as_of_seq: int  # the EXEC stream's last sequence the balances include


class VenueReady(msgspec.Struct, kw_only=True, frozen=True):
    venue: str
    ready: bool  # reconciled: orders may go to the venue (exits, hedges, entries)
    run_id: str
    reason: str = ""
    # New entries on the venue halted (external activity, balance drift) until resolved or
    # acknowledged; exits and hedges still go (ready stays true).
    halted: bool = False


class RiskEvent(msgspec.Struct, kw_only=True, frozen=True):
    symbol: str
    kind: str  # e.g. daily_loss_limit, exposure_cap, unhedged_exposure
    blocked: bool
    detail: str = ""


class Discrepancy(msgspec.Struct, kw_only=True, frozen=True):
    kind: str  # missing_order, unknown_open_order, stale_order, balance_drift, ...
    detail: str
    resolution: str = "recorded"
    client_order_id: str | None = None


class ReconReport(msgspec.Struct, kw_only=True, frozen=True):
    venue: str
    run_id: str
    ok: bool
    duration_ms: float
    discrepancies: list[Discrepancy] = []
    error: str = ""


class TradingControl(msgspec.Struct, kw_only=True, frozen=True):
    enabled: bool
    actor: str = "operator"
    reason: str = ""


# type -> (version, payload struct)
MESSAGE_TYPES: dict[str, tuple[int, type[msgspec.Struct]]] = {
    "md.book": (1, Book),
    "md.status": (1, VenueStatus),
    "strat.intent": (1, Intent),
    "exec.order": (1, OrderEvent),
    "exec.fill": (1, FillEvent),
    "exec.balance": (1, BalanceSnapshot),
    "sys.ready": (1, VenueReady),
    "risk.event": (1, RiskEvent),
    "recon.report": (1, ReconReport),
    "ctl.trading": (1, TradingControl),
}
_TYPE_OF = {cls: name for name, (_, cls) in MESSAGE_TYPES.items()}

_encoder = msgspec.json.Encoder(decimal_format="string")
_env_decoder = msgspec.json.Decoder(Envelope)
_payload_decoders = {
    name: msgspec.json.Decoder(cls) for name, (_, cls) in MESSAGE_TYPES.items()
}


def encode(
    payload: msgspec.Struct,
    *,
    msg_id: str,
    source: str,
    session: str,
    mode: str,
    ts: int,
) -> bytes:
    """Wrap ``payload`` in a versioned envelope and encode it to JSON bytes."""
    type_name = _TYPE_OF.get(type(payload))
    if type_name is None:
        raise TypeError(f"unregistered payload type {type(payload).__name__}")
    env = Envelope(
        type=type_name,
        v=MESSAGE_TYPES[type_name][0],
        id=msg_id,
        ts=ts,
        source=source,
        session=session,
        mode=mode,
        payload=msgspec.Raw(_encoder.encode(payload)),
    )
    return _encoder.encode(env)


def decode(data: bytes, where: str = "") -> tuple[Envelope, Any]:
    """Strictly decode an envelope and its payload; raise :class:`DecodeError` saying why."""
    try:
        env = _env_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad envelope: {exc}", where) from None
    known = MESSAGE_TYPES.get(env.type)
    if known is None:
        raise DecodeError(f"unknown message type {env.type!r}", where)
    if env.v != known[0]:
        raise DecodeError(f"unsupported version {env.v} of {env.type!r}", where)
    try:
        payload = _payload_decoders[env.type].decode(env.payload)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad {env.type} payload: {exc}", where) from None
    return env, payload


def to_builtins(obj: Any) -> Any:
    """Structs -> JSON-ready builtins (Decimals as strings)."""
    return msgspec.to_builtins(obj)

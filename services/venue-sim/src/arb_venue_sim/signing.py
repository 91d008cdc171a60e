"""Binance request security: API key header, HMAC-SHA256 signature, timestamp window.

The signed payload is the raw query string (without its ``signature`` parameter)
concatenated, with no separator, to the raw body (without its ``signature``), exactly as
received; it is never re-encoded from parsed parameters.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from arb_common.clock import Clock

from .config import Credentials
from .orders import BinanceError

MAX_RECV_WINDOW = 60_000
DEFAULT_RECV_WINDOW = 5_000


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _split_signature(raw: str) -> tuple[str, str | None]:
    if not raw:
        return "", None
    kept: list[str] = []
    signature = None
    for part in raw.split("&"):
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


def parse_params(query: str, body: str) -> dict[str, str]:
    """Query and form-body parameters; the query string wins when both carry one."""
    params = dict(parse_qsl(body, keep_blank_values=True))
    params.update(parse_qsl(query, keep_blank_values=True))
    return params


def mandatory(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                  "or malformed.", reason="mandatory_param")
    return value


def verify(creds: Credentials, api_key: str | None, query: str, body: str,
           params: dict[str, str], clock: Clock) -> None:
    """Raise the Binance error a real venue would answer for a bad signed request."""
    if not api_key:
        raise BinanceError(-2014, "API-key format invalid.", status=401, reason="api_key")
    if not hmac.compare_digest(api_key.encode(), creds.api_key.encode()):
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.",
                           status=401, reason="api_key")
    q_payload, q_sig = _split_signature(query)
    b_payload, b_sig = _split_signature(body)
    signature = q_sig if q_sig is not None else b_sig
    if not signature:
        mandatory(params, "signature")
    expected = sign(creds.api_secret, q_payload + b_payload)
    if not hmac.compare_digest(expected.encode(), (signature or "").lower().encode()):
        raise BinanceError(-1022, "Signature for this request is not valid.",
                           reason="signature")
    check_timestamp(params, clock)


def check_timestamp(params: dict[str, str], clock: Clock) -> None:
    raw_ts = mandatory(params, "timestamp")
    try:
        ts = int(raw_ts)
        window = float(params.get("recvWindow") or DEFAULT_RECV_WINDOW)
    except ValueError:
        raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was "
                                  "empty/null, or malformed.", reason="mandatory_param") from None
    if window > MAX_RECV_WINDOW or window <= 0:
        raise BinanceError(-1131, "recvWindow must be less than 60000", reason="recv_window")
    if ts > 10**14:  # microseconds
        ts //= 1000
    now = clock.now_ms()
    if ts >= now + 1000:
        raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the "
                                  "server's time.", reason="timestamp")
    if now - ts > window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.",
                           reason="timestamp")

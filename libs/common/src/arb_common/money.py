"""Decimal helpers: money and quantities never touch float."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

ZERO = Decimal(0)
ONE = Decimal(1)
BPS = Decimal(10_000)


def D(value: str | int | Decimal) -> Decimal:  # noqa: N802 - short name is the point
    """Parse an exchange number from its string (or an int). Floats are refused."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"refusing to build a Decimal from {type(value).__name__} {value!r}")
    try:
        result = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"not a finite decimal number: {value!r}")
    return result


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step`` (lot size, tick size)."""
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def quantize(value: Decimal, places: int = 8) -> Decimal:
    """Round half-even to ``places`` decimals (for display and fee amounts)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def to_str(value: Decimal) -> str:
    """Canonical string for the wire: no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def bps(numerator: Decimal, denominator: Decimal) -> Decimal:
    """``numerator / denominator`` in basis points (0 when the denominator is 0)."""
    if denominator == 0:
        return ZERO
    return numerator / denominator * BPS

"""Redis keyspace: ``arb:{mode}:{session}:{domain}:{symbol}:{field}`` with a TTL per domain."""

from __future__ import annotations

from dataclasses import dataclass

# Seconds; None means the key never expires (positions and guard state must not vanish).
TTL_POLICY: dict[str, int | None] = {
    "position": None,
    "guard": None,
    "equity": None,
    "cooldown": 3600,
    "heartbeat": 30,
    "book": 60,
    "session": None,
}

_FORBIDDEN = (":", " ", "*", "?", "[", "]")


def _check(part: str, what: str) -> str:
    if not part or any(ch in part for ch in _FORBIDDEN):
        raise ValueError(f"invalid keyspace {what} {part!r}")
    return part


@dataclass(frozen=True)
class Keyspace:
    """Key builder bound to one mode and session, so modes can never read each other's keys."""

    mode: str
    session: str
    prefix: str = "arb"

    def key(self, domain: str, symbol: str = "_", field: str = "_") -> str:
        return ":".join(
            (
                _check(self.prefix, "prefix"),
                _check(self.mode, "mode"),
                _check(self.session, "session"),
                _check(domain, "domain"),
                _check(symbol, "symbol"),
                _check(field, "field"),
            )
        )

    def pattern(self, domain: str = "*") -> str:
        """Glob over this mode+session (for SCAN); never crosses into another mode."""
        return f"{self.prefix}:{self.mode}:{self.session}:{domain}:*"

    def mode_pattern(self) -> str:
        """Glob over every session of this mode (for ``arbctl reset``)."""
        return f"{self.prefix}:{self.mode}:*"

    @staticmethod
    def ttl(domain: str) -> int | None:
        return TTL_POLICY.get(domain)

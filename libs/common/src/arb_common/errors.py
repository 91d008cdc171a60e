"""One classified exception hierarchy shared by every service.

Retryable errors (``TemporaryError`` and subclasses) may be retried with backoff;
fatal ones (``ConfigError``, ``InvariantViolation``) must not be.
"""

from __future__ import annotations


class ArbError(Exception):
    """Base of every error this system raises on purpose."""


class TemporaryError(ArbError):
    """A transient failure: retrying the same call later may succeed."""


class RateLimited(TemporaryError):
    """The venue (or a local limiter) asked us to slow down."""


class UnknownOutcome(TemporaryError):
    """A request whose effect is unknown (timeout, disconnect, 5xx).

    Never to be read as a rejection: resolve it by querying the client order id.
    """


class FatalError(ArbError):
    """A failure that retrying cannot fix."""


class ConfigError(FatalError):
    """Bad configuration: the process must exit with one clear line."""


class InvariantViolation(FatalError):
    """Something that must never happen did; fail loudly (crash-only design)."""


class DecodeError(ArbError):
    """An input (bus message, venue frame, API request) could not be decoded."""

    def __init__(self, reason: str, where: str = "") -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where

"""Subjects and streams of the bus contract (see ARCHITECTURE.md).

Subjects: ``<domain>.<event>.<venue>.<symbol>``. A non-empty ``prefix`` (``ARB_BUS_PREFIX``)
isolates a deployment or a test run on shared engines: ``t1.md.book.alpha.BTC-USDT`` and
stream ``T1_MD``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    storage: StorageType
    max_age_s: float
    duplicate_window_s: float = 120.0
    max_msgs_per_subject: int = -1


# Request/reply control lives on ``ctl.<service>.<verb>`` (core NATS, not captured by a stream,
# or JetStream would answer the request with a PubAck). Durable operator decisions are recorded
# on ``ctl.event.<what>`` in the CTL stream.
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("MD", ("md.>",), StorageType.MEMORY, 120.0, 30.0, max_msgs_per_subject=1000),
    StreamSpec("STRAT", ("strat.>",), StorageType.FILE, 7 * 86400.0),
    StreamSpec("EXEC", ("exec.>",), StorageType.FILE, 30 * 86400.0),
    StreamSpec("RISK", ("risk.>",), StorageType.FILE, 30 * 86400.0),
    StreamSpec("RECON", ("recon.>", "sys.>"), StorageType.FILE, 30 * 86400.0),
    StreamSpec("CTL", ("ctl.event.>",), StorageType.FILE, 365 * 86400.0),
    StreamSpec("DLQ", ("dlq.>",), StorageType.FILE, 30 * 86400.0),
)


@dataclass(frozen=True)
class Subjects:
    prefix: str = ""

    def _p(self, subject: str) -> str:
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def stream_name(self, name: str) -> str:
        return f"{self.prefix.upper()}_{name}" if self.prefix else name

    def stream_config(self, spec: StreamSpec, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            name=self.stream_name(spec.name),
            subjects=[self._p(s) for s in spec.subjects],
            storage=spec.storage,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=spec.max_age_s,
            duplicate_window=spec.duplicate_window_s,
            max_msgs_per_subject=spec.max_msgs_per_subject,
            num_replicas=replicas,
        )

    def strip(self, subject: str) -> str:
        """The contract subject without this deployment's prefix."""
        if self.prefix and subject.startswith(self.prefix + "."):
            return subject[len(self.prefix) + 1 :]
        return subject

    # -- builders
    def book(self, venue: str, symbol: str) -> str:
        return self._p(f"md.book.{venue}.{symbol}")

    def md_status(self, venue: str) -> str:
        return self._p(f"md.status.{venue}")

    def intent(self, symbol: str) -> str:
        return self._p(f"strat.intent.{symbol}")

    def order(self, venue: str, symbol: str) -> str:
        return self._p(f"exec.order.{venue}.{symbol}")

    def fill(self, venue: str, symbol: str) -> str:
        return self._p(f"exec.fill.{venue}.{symbol}")

    def balance(self, venue: str) -> str:
        return self._p(f"exec.balance.{venue}")

    def risk(self, symbol: str) -> str:
        return self._p(f"risk.event.{symbol}")

    def ready(self, venue: str) -> str:
        return self._p(f"sys.ready.{venue}")

    def recon_report(self) -> str:
        return self._p("recon.report")

    def ctl(self, service: str, verb: str) -> str:
        return self._p(f"ctl.{service}.{verb}")

    def ctl_event(self, what: str) -> str:
        return self._p(f"ctl.event.{what}")

    def dlq(self, stream: str) -> str:
        return self._p(f"dlq.{stream}")

    def any(self, pattern: str) -> str:
        """Prefix an arbitrary filter such as ``exec.>`` or ``md.book.*.*``."""
        return self._p(pattern)

"""Gate state: newest VenueReady wins, closed gates name the reason."""

from __future__ import annotations

import pytest

from arb_common.messages import Envelope, VenueReady, decode, encode
from arb_executor.gate import Gate, GateClosed


def ready_msg(venue: str, ready: bool, ts: int, reason: str = "") -> tuple[Envelope, VenueReady]:
    payload = VenueReady(venue=venue, ready=ready, run_id=f"r{ts}", reason=reason)
    env, decoded = decode(encode(payload, msg_id=f"ready:{venue}:r{ts}:{int(ready)}",
                                 source="reconciler", session="s", mode="live", ts=ts))
    return env, decoded


def test_gate_starts_closed_and_says_why() -> None:
    gate = Gate(["alpha", "beta"])
    with pytest.raises(GateClosed, match="alpha: no sys.ready message yet"):
        gate.check("alpha")
    assert gate.report() == (False, "alpha=closed (no sys.ready message yet), "
                                    "beta=closed (no sys.ready message yet)")


def test_an_older_ready_message_never_overrides_a_newer_one() -> None:
    gate = Gate(["alpha"])
    gate.apply(*ready_msg("alpha", False, 200, "reconciling"))
    gate.apply(*ready_msg("alpha", True, 100))       # stale stored message read late
    assert not gate.is_open("alpha")
    gate.apply(*ready_msg("alpha", True, 300))
    gate.check("alpha")
    assert gate.report() == (True, "alpha=open")


def test_unconfigured_venue_is_closed() -> None:
    gate = Gate(["alpha"])
    gate.apply(*ready_msg("gamma", True, 1))
    with pytest.raises(GateClosed, match="gamma: not a configured venue"):
        gate.check("gamma")

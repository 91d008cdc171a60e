"""GC tuning: pauses are measured per generation; startup objects are frozen."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from arb_common.gctune import freeze_startup, install_pause_metric


def _count(gen: str) -> float:
    return REGISTRY.get_sample_value("arb_gc_pause_seconds_count", {"generation": gen}) or 0.0


def test_every_collection_is_timed_by_generation() -> None:
    install_pause_metric()
    install_pause_metric()  # idempotent: one callback
    before = {g: _count(g) for g in ("0", "1", "2")}
    gc.collect(0)
    gc.collect(2)
    assert _count("0") >= before["0"] + 1  # automatic collections may add more
    assert _count("2") >= before["2"] + 1
    assert REGISTRY.get_sample_value("arb_gc_pause_seconds_sum", {"generation": "2"}) > 0


def test_freeze_moves_survivors_out_of_the_collectors_way() -> None:
    keep = [{"n": i} for i in range(1000)]  # survives: lives in this frame
    try:
        frozen = freeze_startup()
        assert frozen >= len(keep)
        assert gc.get_freeze_count() == frozen
        assert all(not any(obj is k for obj in gc.get_objects()) for k in keep[:3])
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual

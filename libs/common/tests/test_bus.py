"""Bus helpers against a real NATS JetStream server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import nats.js.errors
import pytest

from arb_common.bus import DLQ, Bus, Delivery, LastSequenceMismatch, delivery_count
from arb_common.messages import Envelope, FillEvent, VenueReady
from arb_common.subjects import STREAMS
from arb_common.testing import connected_bus
from arb_common.testing import wait_until as _wait_for

pytestmark = pytest.mark.integration


def _fill(trade_id: str) -> FillEvent:
    return FillEvent(venue="alpha", symbol="BTC-USDT", client_order_id="c1",
                     venue_trade_id=trade_id, side="buy", quantity=Decimal("1"),
                     price=Decimal("10"), fee=Decimal("0.01"), fee_asset="USDT", ts=1)


@pytest.fixture
async def bus(nats_url: str, bus_prefix: str, cleanup_streams: None) -> Any:
    async with connected_bus(nats_url, bus_prefix, session="s1") as b:
        await b.provision()  # idempotent
        yield b


async def test_republish_with_same_id_is_dropped_by_jetstream(bus: Bus) -> None:
    subject = bus.subjects.fill("alpha", "BTC-USDT")
    first = await bus.publish(subject, _fill("1"), "fill:alpha:1")
    again = await bus.publish(subject, _fill("1"), "fill:alpha:1")
    assert not first.duplicate and again.duplicate
    info = await bus.js.stream_info(bus.subjects.stream_name("EXEC"))
    assert info.state.messages == 1


async def test_publish_expecting_a_last_sequence_is_stored_only_right_after_it(bus: Bus) -> None:
    subject = bus.subjects.fill("alpha", "BTC-USDT")
    first = await bus.publish(subject, _fill("1"), "fill:alpha:1")
    second = await bus.publish(subject, _fill("2"), "fill:alpha:2", expected_last_seq=first.seq)
    assert second.seq == first.seq + 1
    with pytest.raises(LastSequenceMismatch) as err:
        await bus.publish(subject, _fill("3"), "fill:alpha:3", expected_last_seq=first.seq)
    assert err.value.last_seq == second.seq
    info = await bus.js.stream_info(bus.subjects.stream_name("EXEC"))
    assert info.state.messages == 2


async def test_consumer_acks_after_handler_and_redelivers_on_failure(bus: Bus) -> None:
    seen: list[str] = []
    attempts = {"n": 0}

    async def handler(env: Envelope, payload: Any) -> None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("database down")
        seen.append(payload.venue_trade_id)

    bus.consume(stream="EXEC", durable="t-redeliver", filter_subject=bus.subjects.any("exec.>"),
                handler=handler, backoff=(0.1,))
    await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), _fill("7"), "fill:alpha:7")
    await _wait_for(lambda: seen == ["7"])
    assert attempts["n"] == 2


@pytest.mark.parametrize("lanes", [False, True])
async def test_handler_knows_the_delivery_count_of_its_message(bus: Bus, lanes: bool) -> None:
    counts: list[int | None] = []

    async def handler(env: Envelope, payload: Any) -> None:
        counts.append(delivery_count())
        if len(counts) < 3:
            raise RuntimeError("not yet")

    durable = f"t-count-{lanes}"
    bus.consume(stream="EXEC", durable=durable, handler=handler, backoff=(0.05,),
                filter_subject=bus.subjects.any("exec.>"),
                lane_key=(lambda env, payload: payload.venue) if lanes else None)
    await _consumer_exists(bus, durable)  # a message older than the consumer counts 2
    await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), _fill("8"), "fill:alpha:8")
    await _wait_for(lambda: len(counts) == 3)
    assert counts == [1, 2, 3]
    assert delivery_count() is None  # outside a handler


async def _consumer_exists(bus: Bus, durable: str) -> None:
    stream = bus.subjects.stream_name("EXEC")
    for _ in range(500):
        try:
            await bus.js.consumer_info(stream, durable)
            return
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.02)
    raise AssertionError(f"consumer {durable} never created")


async def test_message_stored_before_its_consumer_existed_counts_as_a_redelivery(
        bus: Bus) -> None:
    """The durable's record covers only its own lifetime: a message stored before it was
    created (e.g. deleted and re-created while the message waited) may have been delivered
    by the one before, so its first delivery here counts 2; later messages count 1."""
    counts: dict[str, int | None] = {}

    async def handler(env: Envelope, payload: Any) -> None:
        counts[payload.venue_trade_id] = delivery_count()

    subject = bus.subjects.fill("alpha", "BTC-USDT")
    await bus.publish(subject, _fill("old"), "fill:alpha:old")
    bus.consume(stream="EXEC", durable="t-count-age", handler=handler,
                filter_subject=bus.subjects.any("exec.>"))
    await _wait_for(lambda: "old" in counts)
    await bus.publish(subject, _fill("new"), "fill:alpha:new")
    await _wait_for(lambda: "new" in counts)
    assert counts == {"old": 2, "new": 1}


async def test_undecodable_message_goes_to_dlq_and_consumer_keeps_going(bus: Bus) -> None:
    seen: list[str] = []
    before = DLQ.labels(bus.subjects.stream_name("EXEC"), "decode")._value.get()

    async def batch(ds: Sequence[Delivery]) -> None:
        seen.extend(d.payload.venue_trade_id for d in ds)

    bus.consume(stream="EXEC", durable="t-dlq", filter_subject=bus.subjects.any("exec.>"),
                batch_handler=batch)
    await bus.js.publish(bus.subjects.fill("alpha", "BTC-USDT"), b"{garbage")
    await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), _fill("8"), "fill:alpha:8")
    await _wait_for(lambda: seen == ["8"])
    after = DLQ.labels(bus.subjects.stream_name("EXEC"), "decode")._value.get()
    assert after == before + 1
    dlq = await bus.js.stream_info(bus.subjects.stream_name("DLQ"))
    assert dlq.state.messages == 1


async def test_message_failing_max_deliver_times_is_dead_lettered_not_lost(bus: Bus) -> None:
    async def handler(env: Envelope, payload: Any) -> None:
        raise RuntimeError("always fails")

    bus.consume(stream="EXEC", durable="t-max", filter_subject=bus.subjects.any("exec.>"),
                handler=handler, max_deliver=2, backoff=(0.05,))
    await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), _fill("9"), "fill:alpha:9")

    async def dlq_count() -> int:
        return (await bus.js.stream_info(bus.subjects.stream_name("DLQ"))).state.messages

    for _ in range(100):
        if await dlq_count() == 1:
            break
        await asyncio.sleep(0.1)
    assert await dlq_count() == 1


async def test_last_message_reads_the_gate_state(bus: Bus) -> None:
    subject = bus.subjects.ready("alpha")
    assert await bus.last_message("RECON", subject) is None
    await bus.publish(subject, VenueReady(venue="alpha", ready=False, run_id="r1"), "ready:a:r1:0")
    await bus.publish(subject, VenueReady(venue="alpha", ready=True, run_id="r1"), "ready:a:r1:1")
    got = await bus.last_message("RECON", subject)
    assert got is not None and got[1].ready is True


async def test_publish_recreates_a_stream_that_vanished(bus: Bus) -> None:
    await bus.js.delete_stream(bus.subjects.stream_name("EXEC"))
    ack = await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), _fill("11"), "fill:alpha:11")
    assert ack.stream == bus.subjects.stream_name("EXEC")


async def test_publish_stamps_the_envelope_with_the_given_decision_time(bus: Bus) -> None:
    subject = bus.subjects.fill("alpha", "BTC-USDT")
    await bus.publish(subject, _fill("20"), "fill:alpha:20", ts=123_456)
    got = await bus.last_message("EXEC", subject)
    assert got is not None and got[0].ts == 123_456


async def test_follow_replays_from_a_sequence_then_follows_live_in_order(bus: Bus) -> None:
    subject = bus.subjects.fill("alpha", "BTC-USDT")
    for i in range(1, 6):
        await bus.publish(subject, _fill(str(i)), f"fill:alpha:{i}")
    seen: list[tuple[int, str]] = []

    async def handler(seq: int, env: Envelope, payload: Any) -> None:
        seen.append((seq, payload.venue_trade_id))

    follower = bus.follow(stream="EXEC", filter_subject=bus.subjects.any("exec.>"),
                          start_seq=3, handler=handler, name="t-follow")
    await asyncio.wait_for(follower.caught_up.wait(), 5)
    assert seen == [(3, "3"), (4, "4"), (5, "5")]
    await bus.publish(subject, _fill("6"), "fill:alpha:6")
    await _wait_for(lambda: len(seen) == 4)
    assert seen[-1] == (6, "6") and follower.last_seq == 6


async def test_follow_with_nothing_to_replay_is_caught_up_at_once(bus: Bus) -> None:
    async def handler(seq: int, env: Envelope, payload: Any) -> None:
        raise AssertionError("nothing to hand over")

    follower = bus.follow(stream="EXEC", filter_subject=bus.subjects.any("exec.>"),
                          start_seq=1, handler=handler)
    await asyncio.wait_for(follower.caught_up.wait(), 0.9)  # not after an empty fetch (1 s)


async def test_follow_survives_its_consumer_vanishing_without_gap_or_repeat(bus: Bus) -> None:
    subject = bus.subjects.fill("alpha", "BTC-USDT")
    seen: list[int] = []

    async def handler(seq: int, env: Envelope, payload: Any) -> None:
        seen.append(seq)

    follower = bus.follow(stream="EXEC", filter_subject=None, start_seq=1, handler=handler)
    await bus.publish(subject, _fill("1"), "fill:alpha:1")
    await _wait_for(lambda: seen == [1])
    stream = bus.subjects.stream_name("EXEC")
    for name in await bus.js.consumers_info(stream):  # deleted under it (e.g. server restart)
        await bus.js.delete_consumer(stream, name.name)
    for i in range(2, 5):
        await bus.publish(subject, _fill(str(i)), f"fill:alpha:{i}")
    await _wait_for(lambda: seen[-1:] == [4], timeout=15)
    assert seen == [1, 2, 3, 4]
    assert follower.last_seq == 4


async def test_follow_dead_letters_an_undecodable_message_and_moves_on(bus: Bus) -> None:
    subject = bus.subjects.fill("alpha", "BTC-USDT")
    await bus.js.publish(subject, b"{broken")
    await bus.publish(subject, _fill("2"), "fill:alpha:2")
    seen: list[int] = []

    async def handler(seq: int, env: Envelope, payload: Any) -> None:
        seen.append(seq)

    follower = bus.follow(stream="EXEC", filter_subject=bus.subjects.any("exec.>"),
                          start_seq=1, handler=handler)
    await asyncio.wait_for(follower.caught_up.wait(), 5)
    assert seen == [2] and follower.last_seq == 2
    info = await bus.js.stream_info(bus.subjects.stream_name("DLQ"))
    assert info.state.messages == 1


async def test_in_order_consumer_retries_a_failing_batch_in_place_keeping_stream_order(
        bus: Bus) -> None:
    for n in range(6):
        await bus.publish(bus.subjects.fill("alpha", "BTC-USDT"), _fill(str(n)), f"fill:alpha:{n}")
    seen: list[str] = []
    down = {"left": 3}  # the effect's store is "down" for the first three attempts

    async def handler(batch: Sequence[Delivery]) -> None:
        if down["left"] > 0:
            down["left"] -= 1
            raise ConnectionError("ledger down")
        seen.extend(d.payload.venue_trade_id for d in batch)

    bus.consume(stream="EXEC", durable="ordered", filter_subject=bus.subjects.any("exec.>"),
                batch_handler=handler, batch=2, backoff=(0.05,), in_order=True)
    await _wait_for(lambda: len(seen) == 6, 10, what="all six applied")
    assert seen == [str(n) for n in range(6)]  # nothing newer overtook the failing batch


async def test_in_order_consumer_restarts_at_the_ack_floor_after_its_holder_died(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix, session="s1") as first:
        for n in range(5):
            await first.publish(first.subjects.fill("alpha", "BTC-USDT"), _fill(str(n)),
                                f"fill:alpha:{n}")
        got: list[str] = []

        async def apply_two_then_hang(batch: Sequence[Delivery]) -> None:
            got.extend(d.payload.venue_trade_id for d in batch)
            if len(got) > 2:
                await asyncio.sleep(3600)  # "killed" while holding messages 2, 3

        first.consume(stream="EXEC", durable="ledger", batch_handler=apply_two_then_hang,
                      filter_subject=first.subjects.any("exec.>"), batch=2, in_order=True,
                      ack_wait=60)
        await _wait_for(lambda: len(got) >= 4, 10, what="two batches delivered")
        await first.nc.close()  # dies: messages 2 and 3 unacked, 4 never delivered
    async with connected_bus(nats_url, bus_prefix, session="s1") as second:
        seen: list[str] = []

        async def apply(batch: Sequence[Delivery]) -> None:
            seen.extend(d.payload.venue_trade_id for d in batch)

        second.consume(stream="EXEC", durable="ledger", batch_handler=apply,
                       filter_subject=second.subjects.any("exec.>"), batch=2, in_order=True,
                       ack_wait=60)
        # Without the restart at the ack floor, 4 would come at once and 2, 3 after 60 s.
        await _wait_for(lambda: len(seen) >= 3, 10, what="the unacked ones first, in order")
        assert seen[:3] == ["2", "3", "4"]


async def test_streams_are_provisioned_with_the_configured_replicas(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix) as b:  # default: ARB_STREAM_REPLICAS=1
        infos = [await b.js.stream_info(b.subjects.stream_name(s.name)) for s in STREAMS]
        assert {i.config.num_replicas for i in infos} == {1}
        # 3 replicas reach the server: one alone (not a cluster) refuses to create them,
        # loudly, at start (a cluster of 3, the prod overlay, creates them).
        three = Bus(nats_url, service="test", session="test", mode="paper",
                    prefix=bus_prefix + "r3", stream_replicas=3)
        three._nc, three._js = b.nc, b.js
        with pytest.raises(nats.js.errors.APIError) as refused:
            await three.provision()
        assert refused.value.err_code == 10074, refused.value  # replicas > 1 not supported


async def test_close_never_hangs_on_a_task_that_ignores_its_cancellation(
        nats_url: str, bus_prefix: str, cleanup_streams: None) -> None:
    async with connected_bus(nats_url, bus_prefix) as b:
        release = asyncio.Event()

        async def stubborn() -> None:
            while not release.is_set():
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass  # swallowed: the old close awaited this forever

        task = asyncio.create_task(stubborn())
        b._tasks.append(task)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(b.close(tasks_timeout_s=0.3), timeout=5)
        assert loop.time() - started < 3 and b.nc.is_closed
        release.set()
        task.cancel()
        await asyncio.wait({task}, timeout=1)

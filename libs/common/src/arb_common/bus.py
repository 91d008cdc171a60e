"""Bus helpers on nats-py JetStream.

- :meth:`Bus.connect`: unlimited reconnects, callbacks that keep ``/readyz`` honest.
- :meth:`Bus.provision`: idempotent stream creation/update (every service does it at start).
- :meth:`Bus.publish`: deterministic ``Nats-Msg-Id`` and a checked PubAck; retried on timeouts
  with the same id, so a re-publish is dropped by JetStream's duplicate window.
- :meth:`Bus.consume`: durable pull consumer, explicit ack only after the handler's effect,
  finite ``max_deliver`` with backoff; undecodable messages and messages that exhausted their
  deliveries go to ``dlq.<stream>`` with the reason (counted, never fatal).
- :meth:`Bus.follow`: ordered read by stream sequence (replay from a sequence, then live) for
  owners of in-memory state that track the last sequence they applied themselves.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from prometheus_client import Counter, Gauge
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from .clock import SYSTEM_CLOCK, Clock
from .errors import DecodeError, TemporaryError
from .messages import Envelope, decode, encode
from .subjects import STREAMS, Subjects

if TYPE_CHECKING:
    from .follow import Follower

logger = logging.getLogger(__name__)

PUBLISHED = Counter("arb_bus_published_total", "Messages published", ["kind"])
PUB_DUPLICATES = Counter(
    "arb_bus_publish_duplicates_total", "Publishes JetStream dropped as duplicates", ["kind"]
)
CONSUMED = Counter("arb_bus_consumed_total", "Messages handled and acked", ["stream", "consumer"])
HANDLER_ERRORS = Counter(
    "arb_bus_handler_errors_total", "Handler failures (message naked)", ["stream", "consumer"]
)
DLQ = Counter("arb_bus_dlq_total", "Messages sent to the dead-letter subject", ["stream", "reason"])
PENDING = Gauge(
    "arb_bus_consumer_pending", "Messages waiting for a durable consumer", ["stream", "consumer"]
)
CONNECTED = Gauge("arb_bus_connected", "1 while connected to NATS")
RECONNECTS = Counter("arb_bus_reconnects_total", "NATS reconnections")

_RETRYABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError, TemporaryError)
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code: Nats-Expected-Last-Sequence not met


class LastSequenceMismatch(Exception):
    """A publish with ``expected_last_seq`` found the stream elsewhere (nothing stored);
    ``last_seq``: the stream's last sequence, as the server said (None if it did not)."""

    def __init__(self, message: str, last_seq: int | None = None) -> None:
        super().__init__(message)
        self.last_seq = last_seq


def _kind(subject: str) -> str:
    parts = subject.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else subject


@dataclass(frozen=True)
class Delivery:
    env: Envelope
    payload: Any
    msg: Msg
    consumer_created: datetime | None = None  # the durable's creation (server clock)


_DELIVERY: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "arb_bus_delivery", default=None)


def delivery_count() -> int | None:
    """How many times JetStream may have delivered the message whose handler is running, as
    recorded in the durable consumer's state (1: the first delivery); None outside a
    :meth:`Bus.consume` handler.

    A message stored before the durable consumer was created (deleted and re-created, e.g. by
    an operator, or created after the message was published) counts at least 2: a consumer
    of the same name may have delivered it before, and its record is gone. Creation time and
    message time are both the server's clock."""
    d = _DELIVERY.get()
    if d is None:
        return None
    n = d.msg.metadata.num_delivered or 1
    if n == 1 and (d.consumer_created is None
                   or d.msg.metadata.timestamp < d.consumer_created):
        return 2
    return n


Handler = Callable[[Envelope, Any], Awaitable[None]]
SeqHandler = Callable[[int, Envelope, Any], Awaitable[None]]  # (stream sequence, env, payload)
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
LaneKey = Callable[[Envelope, Any], str]


class SeenIds:
    """Bounded LRU of message ids already applied (idempotency for in-memory effects)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._cap = capacity

    def add(self, msg_id: str) -> bool:
        """Record ``msg_id``; False if it was already there."""
        if msg_id in self._ids:
            self._ids.move_to_end(msg_id)
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self._cap:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._ids


class Bus:
    def __init__(
        self,
        url: str,
        *,
        service: str,
        session: str,
        mode: str,
        prefix: str = "",
        clock: Clock = SYSTEM_CLOCK,
        stream_replicas: int = 1,
    ) -> None:
        self.url = url
        self.stream_replicas = stream_replicas  # of the streams provision() creates
        self.service = service
        self.session = session
        self.mode = mode
        self.subjects = Subjects(prefix)
        self.clock = clock
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.closed = asyncio.Event()

    # ------------------------------------------------------------ connection
    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("bus not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus not connected")
        return self._js

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self, *, connect_timeout: float = 5.0) -> None:
        async def disconnected() -> None:
            CONNECTED.set(0)
            logger.warning("nats disconnected service=%s", self.service)

        async def reconnected() -> None:
            CONNECTED.set(1)
            RECONNECTS.inc()
            logger.info("nats reconnected service=%s", self.service)

        async def closed() -> None:
            CONNECTED.set(0)
            self.closed.set()
            logger.warning("nats connection closed service=%s", self.service)

        async def error(exc: Exception) -> None:
            logger.warning("nats error service=%s error=%r", self.service, exc)

        self._nc = await nats.connect(
            servers=[self.url],
            name=self.service,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            closed_cb=closed,
            error_cb=error,
        )
        self._js = self._nc.jetstream(timeout=5.0)
        CONNECTED.set(1)
        logger.info("nats connected service=%s url=%s", self.service, self.url)

    async def provision(self) -> None:
        """Create or update every stream of the contract (``stream_replicas`` replicas each);
        safe to run from every service."""
        for spec in STREAMS:
            cfg = self.subjects.stream_config(spec, self.stream_replicas)
            try:
                await self.js.stream_info(cfg.name or "")
            except nats.js.errors.NotFoundError:
                try:
                    await self.js.add_stream(config=cfg)
                    logger.info("stream created name=%s", cfg.name)
                except nats.js.errors.BadRequestError:  # created concurrently by another service
                    await self.js.update_stream(config=cfg)
                continue
            await self.js.update_stream(config=cfg)

    async def close(self, *, tasks_timeout_s: float = 5.0) -> None:
        """Stop the bus's tasks (consumers, followers), then flush and close NATS.

        A task still running ``tasks_timeout_s`` after its cancellation (one that swallowed
        it, or waits on something that never comes) is logged and left behind: closing the
        connection ends it, and shutdown never hangs on it."""
        self._stopping.set()
        tasks, self._tasks = list(self._tasks), []
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=tasks_timeout_s)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.debug("bus task ended with error name=%s error=%r",
                                 task.get_name(), task.exception())
            for task in pending:
                logger.error("bus task still running %.1f s after cancel name=%s; closing "
                             "NATS under it", tasks_timeout_s, task.get_name())
        if self._nc is not None and not self._nc.is_closed:
            # Not drain(): nats-py never completes a drain with pull subscriptions alive.
            # Consumers are cancelled above, so flush what we published and close.
            try:
                await self._nc.flush(timeout=2)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
            await self._nc.close()

    # ------------------------------------------------------------ publish
    def envelope(self, payload: msgspec.Struct, msg_id: str, ts: int | None = None) -> bytes:
        return encode(
            payload,
            msg_id=msg_id,
            source=self.service,
            session=self.session,
            mode=self.mode,
            ts=self.clock.now_ns() if ts is None else ts,
        )

    async def publish(
        self,
        subject: str,
        payload: msgspec.Struct,
        msg_id: str,
        *,
        timeout: float = 30.0,
        ts: int | None = None,
        expected_last_seq: int | None = None,
    ) -> PubAck:
        """Publish durably: returns only once JetStream acknowledged the message.

        Retries timeouts with the same ``Nats-Msg-Id`` (deduplicated by the stream) for up
        to ``timeout`` seconds, then raises :class:`TemporaryError`. ``ts`` stamps the
        envelope with the time the decision was taken (default: now), so a restart that
        re-reads the message recomputes exactly what was derived from that time.
        ``expected_last_seq``: stored only if the stream's last sequence is that one
        (``Nats-Expected-Last-Sequence``), else :class:`LastSequenceMismatch`.
        """
        data = self.envelope(payload, msg_id, ts)
        return await self.publish_raw(subject, data, msg_id, timeout=timeout,
                                      expected_last_seq=expected_last_seq)

    async def publish_raw(
        self, subject: str, data: bytes, msg_id: str, *, timeout: float = 30.0,
        expected_last_seq: int | None = None,
    ) -> PubAck:
        headers = {"Nats-Msg-Id": msg_id}
        if expected_last_seq is not None:
            headers["Nats-Expected-Last-Sequence"] = str(expected_last_seq)
        kind = _kind(self.subjects.strip(subject))
        try:
            try:
                # First attempt without the retry machinery (~65 us of CPU per publish in
                # tenacity); a retryable failure falls through to the loop with the same id.
                ack = await self.js.publish(subject, data, headers=headers, timeout=2.0)
            except (*_RETRYABLE, nats.js.errors.NoStreamResponseError):
                ack = await self._publish_retrying(subject, data, headers, timeout)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:  # "wrong last sequence: 2"
                tail = (exc.description or "").rpartition(":")[2].strip()
                raise LastSequenceMismatch(f"publish to {subject}: {exc.description}",
                                           int(tail) if tail.isdigit() else None) from None
            raise
        if not ack.stream:
            raise TemporaryError(f"publish to {subject}: PubAck without stream")
        if ack.duplicate:
            PUB_DUPLICATES.labels(kind).inc()
        PUBLISHED.labels(kind).inc()
        return ack

    async def _publish_retrying(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> PubAck:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_RETRYABLE),
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                stop=stop_after_delay(timeout),
                reraise=True,
            ):
                with attempt:
                    try:
                        ack = await self.js.publish(subject, data, headers=headers, timeout=2.0)
                    except nats.js.errors.NoStreamResponseError:
                        # The stream vanished (deleted by an operator or a reset): re-create it.
                        logger.warning("no stream for subject=%s; re-provisioning", subject)
                        await self.provision()
                        raise TemporaryError("stream missing; re-provisioned") from None
        except _RETRYABLE as exc:
            raise TemporaryError(f"publish to {subject} not acknowledged: {exc!r}") from exc
        return ack

    async def publish_fast(self, subject: str, payload: msgspec.Struct, msg_id: str) -> None:
        """Fire-and-forget publish (conflatable data such as books): no PubAck wait."""
        await self.nc.publish(subject, self.envelope(payload, msg_id),
                              headers={"Nats-Msg-Id": msg_id})
        PUBLISHED.labels(_kind(self.subjects.strip(subject))).inc()

    # ------------------------------------------------------------ consume
    async def subscribe(self, subject: str, handler: Handler, *, where: str = "",
                        decoder: Callable[[bytes, str], tuple[Envelope, Any]] = decode) -> None:
        """Core-NATS subscription (latest-wins data such as books); bad messages are counted.
        ``decoder``: e.g. :func:`arb_common.books.decode_book` (levels decoded on use)."""

        async def on_msg(msg: Msg) -> None:
            try:
                env, payload = decoder(msg.data, where or msg.subject)
            except DecodeError as exc:
                await self._dead_letter("core", msg.subject, msg.data, f"decode: {exc.reason}")
                return
            try:
                await handler(env, payload)
            except Exception:  # noqa: BLE001 - a bad message must never kill the service
                HANDLER_ERRORS.labels("core", where or subject).inc()
                logger.exception("handler failed subject=%s", msg.subject)

        await self.nc.subscribe(subject, cb=on_msg)

    async def last_message(self, stream: str, subject: str) -> tuple[Envelope, Any] | None:
        """The last message on ``subject`` in ``stream`` (None if there is none)."""
        try:
            raw = await self.js.get_last_msg(self.subjects.stream_name(stream), subject)
        except nats.js.errors.NotFoundError:
            return None
        if raw.data is None:
            return None
        try:
            return decode(raw.data, subject)
        except DecodeError as exc:
            logger.error("undecodable last message subject=%s reason=%s", subject, exc.reason)
            return None

    def consume(
        self,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        batch: int = 64,
        max_deliver: int = 20,
        ack_wait: float = 30.0,
        backoff: Sequence[float] = (0.5, 1, 2, 5, 10, 30),
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
        lane_key: LaneKey | None = None,
        in_order: bool = False,
    ) -> asyncio.Task[None]:
        """Start a durable pull-consumer loop as a task; the bus cancels it on close.

        ``in_order`` (``batch_handler`` only; for a single writer whose effect depends on the
        order, e.g. the ledger's average-cost positions): a failing batch is retried in place
        (kept in progress, nothing newer fetched) instead of naked, and at start a durable
        left with unacked messages by a dead process is re-created at its ack floor, so the
        stream is applied in stream order across outages and crashes.

        With ``lane_key`` (``handler`` only), messages run concurrently across keys and in
        delivery order within one key (e.g. per symbol): the fetch loop keeps fetching while
        handlers run, and each message is acked when its own handler finished. On close, the
        handlers in flight get ``lane_drain_s`` to finish; what is left is handed back
        (never acked, so redelivered).
        """
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler / batch_handler")
        if lane_key is not None and handler is None:
            raise ValueError("lane_key needs a per-message handler")
        if in_order and batch_handler is None:
            raise ValueError("in_order needs a batch_handler")
        consumer = _Consumer(
            self,
            stream=self.subjects.stream_name(stream),
            durable=durable,
            filter_subject=filter_subject,
            handler=handler,
            batch_handler=batch_handler,
            batch=batch,
            lane_key=lane_key,
            config=ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                max_deliver=max_deliver,
                ack_wait=ack_wait,
                filter_subject=filter_subject,
                deliver_policy=deliver_policy,
                max_ack_pending=max(batch * 4, 256),
            ),
            backoff=list(backoff),
            in_order=in_order,
        )
        task = asyncio.create_task(consumer.run(), name=f"consume:{durable}")
        self._tasks.append(task)
        return task

    def follow(
        self,
        *,
        stream: str,
        filter_subject: str | None,
        start_seq: int,
        handler: SeqHandler,
        name: str = "follow",
    ) -> Follower:
        """Hand every message of ``stream`` (matching ``filter_subject``; None: all) from
        ``start_seq`` on to ``handler`` in stream order, replaying what is stored, then
        following live (a task; the bus cancels it on close). See
        :class:`arb_common.follow.Follower`."""
        from .follow import Follower

        follower = Follower(self, stream=self.subjects.stream_name(stream),
                            filter_subject=filter_subject, start_seq=start_seq,
                            handler=handler, name=name)
        follower.task = asyncio.create_task(follower.run(), name=f"follow:{name}")
        self._tasks.append(follower.task)
        return follower

    async def _dead_letter(self, stream: str, subject: str, data: bytes, reason: str) -> None:
        DLQ.labels(stream, reason.split(":", 1)[0]).inc()
        logger.error(
            "dead-letter stream=%s subject=%s reason=%s bytes=%d",
            stream, subject, reason, len(data),
        )
        base = stream.split("_", 1)[-1] if self.subjects.prefix else stream
        try:
            await self.js.publish(
                self.subjects.dlq(base),
                data,
                headers={"Arb-Dlq-Reason": reason[:500], "Arb-Dlq-Subject": subject},
                timeout=5.0,
            )
        except Exception as exc:  # noqa: BLE001 - counting it is the contract; keep running
            logger.error("dead-letter publish failed stream=%s error=%r", stream, exc)


class _Consumer:
    def __init__(
        self,
        bus: Bus,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: Handler | None,
        batch_handler: BatchHandler | None,
        batch: int,
        config: ConsumerConfig,
        backoff: list[float],
        lane_key: LaneKey | None = None,
        lane_drain_s: float = 10.0,
        in_order: bool = False,
    ) -> None:
        self.bus = bus
        self.in_order = in_order
        self.lane_key = lane_key
        self.lane_drain_s = lane_drain_s
        self._lanes: dict[str, asyncio.Task[None]] = {}  # key -> last task of that lane
        self._inflight: set[asyncio.Task[None]] = set()
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch = batch
        self.config = config
        self.created: datetime | None = None  # the durable's creation time (server clock)
        self.backoff = backoff
        self.max_deliver = config.max_deliver or 1

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            await self._drain_lanes()

    async def _drain_lanes(self) -> None:
        if not self._inflight:
            return
        pending = set(self._inflight)
        _, left = await asyncio.wait(pending, timeout=self.lane_drain_s)
        for task in left:  # handed back: not acked, JetStream redelivers it
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)

    async def _loop(self) -> None:
        sub: JetStreamContext.PullSubscription | None = None
        while not self.bus._stopping.is_set():
            try:
                if sub is None and self.in_order:
                    await self._resume_at_ack_floor()
                if sub is None:
                    sub = await self.bus.js.pull_subscribe(
                        self.filter_subject,
                        durable=self.durable,
                        stream=self.stream,
                        config=self.config,
                    )
                    self.created = None  # a new subscription: unknown until its info is read
                    await self._read_info(sub)
                try:
                    msgs = await self._fetch(sub)
                except (nats.errors.TimeoutError, TimeoutError):
                    await self._read_info(sub)
                    continue
                await self._process(msgs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnects and JetStream hiccups
                logger.warning("consumer loop error durable=%s error=%r", self.durable, exc)
                await asyncio.sleep(1.0)

    async def _resume_at_ack_floor(self) -> None:
        """A durable with unacked messages (its last holder died) would hand newer messages
        out before redelivering those (after ``ack_wait``): re-create it at its ack floor so
        delivery restarts, in order, with the first unacked message."""
        try:
            info = await self.bus.js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            return
        if not info.num_ack_pending:
            return
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        logger.warning("re-creating consumer at its ack floor durable=%s floor=%s "
                       "unacked=%s", self.durable, floor, info.num_ack_pending)
        await self.bus.js.delete_consumer(self.stream, self.durable)
        self.config = _restart_config(self.config, floor + 1)

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next message as soon as it is stored, plus the ones already waiting behind it.

        Not one ``fetch(batch)``: nats-py can then hold a message it already received until
        the pull request expires (seen: intents picked up 200-400 ms late, at random, with a
        1 s fetch). A pull for one message completes when it arrives; the rest of the batch
        is asked for only as far as the server said it has it (``num_pending``), so that
        request completes at once too.
        """
        msgs = await sub.fetch(1, timeout=1.0)
        more = min((msgs[-1].metadata.num_pending or 0) if msgs else 0, self.batch - 1)
        if more > 0:
            try:
                msgs.extend(await sub.fetch(more, timeout=0.25))
            except (nats.errors.TimeoutError, TimeoutError):
                pass  # taken by another instance meanwhile: handle what we have
        return msgs

    async def _read_info(self, sub: JetStreamContext.PullSubscription) -> None:
        """Read the consumer's info (at subscribe and on every idle fetch): the pending gauge,
        and the durable's creation time (it may have been deleted and re-created under this
        subscription). If it cannot be read, both stay as they were."""
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # noqa: BLE001 - created unknown: deliveries count as repeats
            logger.debug("consumer info failed durable=%s error=%r", self.durable, exc)
            return
        PENDING.labels(self.stream, self.durable).set(info.num_pending or 0)
        self.created = info.created

    async def _process(self, msgs: list[Msg]) -> None:
        good: list[Delivery] = []
        for msg in msgs:
            try:
                env, payload = decode(msg.data, msg.subject)
            except DecodeError as exc:
                await self.bus._dead_letter(self.stream, msg.subject, msg.data,
                                            f"decode: {exc.reason}")
                await msg.term()
                continue
            good.append(Delivery(env, payload, msg, self.created))
        if not good:
            return
        if self.batch_handler is not None:
            try:
                await self.batch_handler(good)
            except Exception as exc:  # noqa: BLE001
                if not (self.in_order and await self._retry_in_place(good, exc)):
                    await self._failed(good, exc)
                    return
            for d in good:
                await d.msg.ack()
            CONSUMED.labels(self.stream, self.durable).inc(len(good))
        elif self.lane_key is not None:
            for d in good:
                self._dispatch(d)
        else:
            for d in good:
                await self._handle_one(d)
        last = good[-1].msg.metadata
        PENDING.labels(self.stream, self.durable).set(last.num_pending or 0)

    async def _retry_in_place(self, good: list[Delivery], exc: Exception) -> bool:
        """Retry the same batch (in progress, with backoff) until it succeeds (True) or the
        bus stops (False: naked by the caller, redelivered)."""
        HANDLER_ERRORS.labels(self.stream, self.durable).inc(len(good))
        n = 0
        while not self.bus._stopping.is_set():
            delay = self.backoff[min(n, len(self.backoff) - 1)]
            logger.warning("batch failed, retrying in place durable=%s count=%d retry_in_s=%s "
                           "error=%r", self.durable, len(good), delay, exc)
            for d in good:
                try:
                    await d.msg.in_progress()
                except Exception:  # noqa: BLE001 - redelivery decides
                    pass
            try:
                await asyncio.wait_for(self.bus._stopping.wait(), timeout=delay)
                return False
            except TimeoutError:
                pass
            try:
                assert self.batch_handler is not None
                await self.batch_handler(good)
                return True
            except Exception as again:  # noqa: BLE001
                exc, n = again, n + 1
        return False

    async def _handle_one(self, d: Delivery) -> None:
        assert self.handler is not None
        keepalive = asyncio.create_task(self._keepalive(d.msg))
        token = _DELIVERY.set(d)
        try:
            await self.handler(d.env, d.payload)
        except Exception as exc:  # noqa: BLE001
            await self._failed([d], exc)
            return
        finally:
            _DELIVERY.reset(token)
            keepalive.cancel()
        await d.msg.ack()
        CONSUMED.labels(self.stream, self.durable).inc()

    async def _keepalive(self, msg: Msg) -> None:
        """Tell JetStream the message is still being worked on (``+WPI``) every third of
        ``ack_wait``, so a long handler (e.g. a hedge) is not redelivered to a second worker
        while it runs. A crashed process sends nothing: redelivery after ``ack_wait``."""
        period = max(0.5, float(self.config.ack_wait or 30.0) / 3)
        while True:
            await asyncio.sleep(period)
            try:
                await msg.in_progress()
            except Exception:  # noqa: BLE001 - connection trouble: redelivery decides
                return

    def _dispatch(self, d: Delivery) -> None:
        """Run ``d`` after the previous message of its lane (concurrently with other lanes)."""
        assert self.lane_key is not None
        try:
            key = self.lane_key(d.env, d.payload)
        except Exception:  # noqa: BLE001 - no key: one shared lane keeps it ordered
            key = ""
        task = asyncio.create_task(self._after(self._lanes.get(key), d))
        self._lanes[key] = task
        self._inflight.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._inflight.discard(t)
            if self._lanes.get(key) is t:
                del self._lanes[key]

        task.add_done_callback(done)

    async def _after(self, prev: asyncio.Task[None] | None, d: Delivery) -> None:
        if prev is not None:  # waiting behind its lane: still "in progress" for JetStream
            keepalive = asyncio.create_task(self._keepalive(d.msg))
            try:
                await asyncio.wait({prev})  # never raises: each lane task handles its errors
            finally:
                keepalive.cancel()
        try:
            await self._handle_one(d)
        except Exception as exc:  # noqa: BLE001 - ack/nak transport trouble: redelivered
            logger.warning("lane handler error durable=%s error=%r", self.durable, exc)

    async def _failed(self, deliveries: Sequence[Delivery], exc: Exception) -> None:
        HANDLER_ERRORS.labels(self.stream, self.durable).inc(len(deliveries))
        logger.warning(
            "handler failed durable=%s count=%d error=%r", self.durable, len(deliveries), exc
        )
        for d in deliveries:
            n = d.msg.metadata.num_delivered or 1
            if n >= self.max_deliver:
                await self.bus._dead_letter(
                    self.stream, d.msg.subject, d.msg.data, f"max_deliver: {exc!r}"
                )
                await d.msg.term()
            else:
                delay = self.backoff[min(n - 1, len(self.backoff) - 1)]
                await d.msg.nak(delay=delay)


def _restart_config(config: ConsumerConfig, start_seq: int) -> ConsumerConfig:
    """``config`` delivering from ``start_seq`` (the consumer is re-created there)."""
    from dataclasses import replace

    return replace(config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                   opt_start_seq=start_seq)

"""The gateway's Kafka producer: its lifetime, readiness, and one bounded publish per upload.

The gateway must start while Kafka is down (containers start in any order), so the
producer connects in a background task that keeps retrying; until it is connected every
publish fails at once with 503 instead of waiting.

Each publish waits at most `produce_timeout_s` for the acknowledgement. The deadlines are
kept in a queue (one timeout for all, so it is in deadline order) and a task fails the
late ones every SWEEP_S: an asyncio.timeout per upload, a timer set and cancelled each
time, cost as much as the rest of publishing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from frontdoor.errors import TooLarge, Unavailable
from vitals import contract, kafka
from vitals.settings import Settings
from vitals.supervise import supervise

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
SWEEP_S = 0.05  # how late past its deadline a publish may be failed


class Publisher:
    def __init__(self, settings: Settings, **producer_options: Any) -> None:
        self._settings = settings
        self._topic = settings.topic(contract.READINGS)
        # aiokafka bounds every connection attempt and expires unsent batches after
        # request_timeout_ms. Tying it to the produce timeout keeps a timed-out upload
        # from reaching Kafka long after its 503, bounds a /readyz check, and bounds how
        # long stop() can spend flushing on SIGTERM.
        self._options: dict[str, Any] = {
            "request_timeout_ms": max(1000, int(settings.produce_timeout_s * 1000)),
            "partitioner": kafka.KeyHashPartitioner(),
            **producer_options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        # (deadline, the publish's waiter), in deadline order.
        self._waiting: deque[tuple[float, asyncio.Future[None]]] = deque()

    async def __aenter__(self) -> Publisher:
        self._connecting = supervise("kafka-connect", self._connect)
        # Were it to stop, every later upload would wait for Kafka without a deadline.
        self._sweeping = supervise("produce-deadlines", self._sweep)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._connecting, self._sweeping):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await kafka.stop_producer(producer, self._settings.produce_timeout_s + 1)

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def ready(self) -> bool:
        """Connected, and a broker accepts a connection now."""
        producer = self._producer
        if producer is None:
            return False
        client = producer.client
        for broker in client.cluster.brokers():
            # ready() reuses an open connection or tries one, never raises.
            if await client.ready(broker.nodeId):
                return True
        return False

    async def publish(self, upload: contract.Upload) -> None:
        """Return only once Kafka acknowledged the upload (acks=all), else raise."""
        await self.publish_message(contract.encode_upload(upload), upload.patient_id)

    async def publish_message(self, value: bytes, patient_id: str) -> None:
        """publish() for an upload already encoded (contract.encode_upload_rows)."""
        retry_after = self._settings.retry_after_s
        producer = self._producer
        if producer is None:
            raise Unavailable(
                "kafka_unavailable",
                "not connected to Kafka yet; retry later",
                retry_after_s=retry_after,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.produce_timeout_s
        delivery: asyncio.Future[Any] | None = None
        try:
            # send() waits only when it lacks metadata or buffer space, and aiokafka bounds
            # that by request_timeout_ms, which is the produce timeout (__init__).
            delivery = await producer.send(self._topic, value, key=patient_id.encode())
            # A waiter of our own, so that failing it at the deadline (or cancelling the
            # request) leaves aiokafka's delivery future alone.
            waiter: asyncio.Future[None] = loop.create_future()
            delivery.add_done_callback(functools.partial(_relay, waiter))
            self._waiting.append((deadline, waiter))
            await waiter
        except (MessageSizeTooLargeError, RecordListTooLargeError):
            # Permanent for this upload: retrying the same body would fail the same way.
            raise TooLarge(
                "message_too_large",
                f"the upload is {len(value)} bytes as a Kafka message, more than "
                "the broker takes: split the batch",
            ) from None
        except (TimeoutError, KafkaError) as exc:
            if delivery is not None:
                delivery.add_done_callback(_late_outcome)
            raise Unavailable(
                "kafka_not_acknowledged",
                f"Kafka did not acknowledge the upload within "
                f"{self._settings.produce_timeout_s:g} s ({type(exc).__name__}); "
                "retry with the same Idempotency-Key",
                retry_after_s=retry_after,
            ) from None

    async def _sweep(self) -> None:
        """Fail the publishes past their deadline (TimeoutError: 503); forget finished ones."""
        waiting = self._waiting
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            while waiting and (waiting[0][0] <= now or waiting[0][1].done()):
                _, waiter = waiting.popleft()
                if not waiter.done():
                    waiter.set_exception(TimeoutError())

    async def _connect(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                # Stopped by start_producer() itself when it fails or is cancelled.
                producer = await kafka.start_producer(self._settings, **self._options)
            except (KafkaError, OSError) as exc:
                log.warning(
                    "kafka not reachable, retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self._producer = producer
            log.info("kafka connected", extra={"topic": self._topic})
            return


def _relay(waiter: asyncio.Future[None], delivery: asyncio.Future[Any]) -> None:
    """aiokafka's outcome to the waiting publish, if it still waits."""
    if waiter.done():  # timed out or cancelled first
        _late_outcome(delivery)
    elif delivery.cancelled():
        waiter.cancel()
    elif (error := delivery.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(None)


def _late_outcome(delivery: asyncio.Future[Any]) -> None:
    # Retrieve the outcome so asyncio does not warn about an unretrieved exception.
    if not delivery.cancelled() and delivery.exception() is not None:
        log.debug("a timed-out upload failed later too")

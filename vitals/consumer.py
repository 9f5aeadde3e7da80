"""The consume loop shared by the processor and both sinks.

poll a batch -> the stage's handler makes its output durable -> commit offsets. The
handler parks undecodable messages with `park()` and goes on; it raises only for failures
that must stop the process (then nothing of the batch is committed and it is redelivered).
SIGTERM finishes the current batch, commits, leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from vitals import kafka
from vitals.probes import ProbeServer
from vitals.settings import Settings
from vitals.supervise import supervise

log = logging.getLogger(__name__)

RECORDS = Counter("vitals_consumed_records_total", "Records consumed", ["stage"])
BATCH_SECONDS = Histogram("vitals_batch_seconds", "Handle and commit time of one batch", ["stage"])
BATCH_SIZE = Histogram(
    "vitals_batch_records",
    "Records per batch",
    ["stage"],
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
)
COMMITS_LOST = Counter(
    "vitals_commits_lost_total",
    "Commits refused because a rebalance moved the partitions",
    ["stage"],
)
LAG = Gauge(
    "vitals_consumer_lag",
    "Messages behind the partition's end: its end offset minus this member's next offset to"
    " read, refreshed every few seconds (also while a batch is stuck)",
    ["stage", "topic", "partition"],
)

# What a handler returns: offsets to commit (next offset to read), or None for "the batch".
Commit = Mapping[TopicPartition, int] | None
Handler = Callable[[Sequence[ConsumerRecord]], Awaitable[Commit]]


class ConsumerLoop:
    """Owns a consumer (and a producer for outputs and dead letters) for one stage."""

    def __init__(
        self,
        settings: Settings,
        *,
        stage: str,
        group_id: str,
        topics: Sequence[str],
        listener: ConsumerRebalanceListener | None = None,
        max_records: Callable[[], int] = lambda: 500,
        tick: Callable[[], Awaitable[None]] | None = None,
        tick_interval_s: float = 5.0,
        lag_interval_s: float = 5.0,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        ready_if: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.topics = [settings.topic(t) for t in topics]
        self.consumer: AIOKafkaConsumer = kafka.consumer(settings, group_id)
        self._producer: AIOKafkaProducer | None = None  # started by run()
        self._listener = listener
        self._max_records = max_records
        self._tick = tick
        self._tick_interval_s = tick_interval_s
        self._last_poll = 0.0
        self._lag_interval_s = lag_interval_s
        self._on_stop = on_stop  # after the last batch, with the producer still up
        self._ready_if = ready_if  # the stage's own condition for /readyz
        self._done: dict[TopicPartition, int] = {}  # committed here: next offset to read
        self._reported: set[TopicPartition] = set()  # partitions with a lag series

    async def park(self, record: ConsumerRecord, error: Exception) -> None:
        await kafka.park(self.producer, self.settings, self.stage, record, error)

    async def ready(self) -> bool:
        polling = time.monotonic() - self._last_poll < 30.0
        return polling and (self._ready_if is None or self._ready_if())

    @property
    def producer(self) -> AIOKafkaProducer:
        """The stage's producer (outputs, dead letters); there while run() runs."""
        if self._producer is None:
            raise RuntimeError("the consume loop's producer is started by run()")
        return self._producer

    async def run(self, handler: Handler, stop: asyncio.Event) -> None:
        self._producer = await kafka.start_producer(self.settings)
        try:
            await self.consumer.start()
            try:
                if self._listener is not None:
                    self.consumer.subscribe(self.topics, listener=self._listener)
                else:
                    self.consumer.subscribe(self.topics)
                async with (
                    ProbeServer(self.settings.probe_host, self.settings.probe_port, self.ready)
                    if self.settings.probe_port
                    else contextlib.nullcontext()
                ):
                    lag = supervise(f"{self.stage}-lag", lambda: self._watch_lag(stop))
                    try:
                        await self._loop(handler, stop)
                        if self._on_stop is not None:
                            await self._on_stop()
                    finally:
                        lag.cancel()
                        self._forget_lag(set())
            finally:
                await self.consumer.stop()  # leaves the group: partitions move at once
        finally:
            await kafka.stop_producer(self.producer, self.settings.shutdown_grace_s)
        log.info("stopped", extra={"stage": self.stage})

    async def _loop(self, handler: Handler, stop: asyncio.Event) -> None:
        next_tick = time.monotonic() + self._tick_interval_s
        log.info("consuming", extra={"stage": self.stage, "topics": self.topics})
        while not stop.is_set():
            try:
                batches = await self.consumer.getmany(
                    timeout_ms=500, max_records=self._max_records()
                )
            except KafkaError as exc:
                log.warning("poll failed", extra={"stage": self.stage, "error": repr(exc)})
                await asyncio.sleep(1)
                continue
            self._last_poll = time.monotonic()
            records = [r for part in batches.values() for r in part]
            if records:
                started = time.perf_counter()
                commit = await handler(records)
                if commit is None:
                    commit = {tp: part[-1].offset + 1 for tp, part in batches.items()}
                if commit:
                    await self._commit(commit)
                RECORDS.labels(self.stage).inc(len(records))
                BATCH_SIZE.labels(self.stage).observe(len(records))
                BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - started)
                # getmany() returns records already fetched without suspending, and a
                # batch with nothing to publish or commit (a replay) awaits nothing: yield,
                # or the heartbeat task starves until the member's session expires.
                await asyncio.sleep(0)
            if self._tick is not None and time.monotonic() >= next_tick:
                await self._tick()
                next_tick = time.monotonic() + self._tick_interval_s

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        # A rebalance between the handler and the commit moves the partitions away; their
        # new owner starts from the last commit and redoes the batch (at-least-once), so
        # this is not a reason to stop the process.
        try:
            await self.consumer.commit(dict(offsets))
            self._done.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            COMMITS_LOST.labels(self.stage).inc()
            log.warning(
                "commit lost to a rebalance",
                extra={"stage": self.stage, "error": type(exc).__name__},
            )

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        """Lag from the broker's end offsets on a timer of its own, not after each batch:
        a consumer stuck in its handler (the database down) must show lag growing."""
        while not stop.is_set():
            try:
                await self._refresh_lag()
            except KafkaError as exc:  # the broker away: the poll loop reports it
                log.debug("lag refresh failed", extra={"stage": self.stage, "error": repr(exc)})
            await asyncio.sleep(self._lag_interval_s)

    async def _refresh_lag(self) -> None:
        assigned = self.consumer.assignment()
        self._forget_lag(assigned)
        if not assigned:
            return
        ends = await self.consumer.end_offsets(list(assigned))
        for tp in assigned - self._done.keys():  # nothing committed here yet: the group's
            committed = await self.consumer.committed(tp)
            if committed is None:  # never committed: read from the start
                committed = (await self.consumer.beginning_offsets([tp]))[tp]
            self._done.setdefault(tp, committed)
        for tp in self.consumer.assignment() & assigned:  # a rebalance may have run meanwhile
            LAG.labels(self.stage, tp.topic, str(tp.partition)).set(
                max(0, ends[tp] - self._done[tp])
            )
            self._reported.add(tp)

    def _forget_lag(self, assigned: set[TopicPartition]) -> None:
        """Drop the series of partitions this member no longer owns: their new owner
        reports them, and a stale value here would be counted twice."""
        for tp in self._reported - assigned:
            LAG.remove(self.stage, tp.topic, str(tp.partition))
        self._reported &= assigned
        self._done = {tp: offset for tp, offset in self._done.items() if tp in assigned}

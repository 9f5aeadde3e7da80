"""Replay on assignment: rebuild a partition's window state from vitals.readings.

Window state lives in memory per assigned partition. When a partition is assigned, with
committed offset c:

- the replay start r is the first offset at or after (now - horizon), horizon being the
  longest detector window plus the allowed lateness (offsets-for-times; the beginning of
  the partition when the broker has no answer). Brokers may answer with an earlier offset
  (tansu answers 0 for every lookup), so records older than the horizon by their
  timestamp are skipped while replaying;
- the consumer seeks to min(r, c); records below c are fed to the engine silently: their
  detections were published before c was committed (offsets are committed only after the
  detections are acknowledged), so they only rebuild state. From c on, records are live;
- no offset is committed for a partition until it is live again, so a committed offset
  never moves backwards;
- a new group (no committed offset) starts at r and is live at once: what arrived within
  the horizon was not processed by this group and may still matter (an ongoing episode),
  while older history would page people for events long over, so it is skipped.

Limits: an episode that began more than the horizon before a restart is replayed from its
middle, so the restarted processor knows it by a later start, and its resolution carries
that other id (reading the partition's open episodes back from vitals.detections on
assignment would close the gap). Silence is wall-clock and not replayed (silence.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from processors.engine import Engine
from vitals import kafka

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Progress:
    """Where one assigned partition stands: replaying below `live_from`, live from it."""

    live_from: int
    horizon_start: int  # ms; records older than this are not replayed
    fresh: bool  # no committed offset: this group never processed the partition
    next_offset: int  # the next offset the processor expects
    last_timestamp: int | None = None  # timestamp of the last record read
    replayed: int = 0

    @property
    def replaying(self) -> bool:
        return self.next_offset < self.live_from

    def skips(self, offset: int, timestamp: int) -> bool:
        """A record too old to matter: below the horizon and replayed, or history."""
        return timestamp < self.horizon_start and (offset < self.live_from or self.fresh)


def plan(committed: int | None, replay_start: int, horizon_start: int) -> Progress:
    """Where to seek and where to go live, given the committed offset and replay start."""
    if committed is None:
        return Progress(replay_start, horizon_start, True, replay_start)
    return Progress(committed, horizon_start, False, min(replay_start, committed))


class ReplayOnAssign(ConsumerRebalanceListener):
    """Keeps `progress` per assigned partition; the engine's state follows assignment."""

    def __init__(self, engine: Engine, horizon_ms: int, clock: Callable[[], int]) -> None:
        self.engine = engine
        self.horizon_ms = horizon_ms
        self.clock = clock
        self.progress: dict[TopicPartition, Progress] = {}
        self.failure: Exception | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def bind(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Simplest correct choice: drop, and replay if the partition comes back.
        for tp in revoked:
            self.progress.pop(tp, None)
            self.engine.drop_partition(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None, "bind() the consumer first"
        horizon_start = self.clock() - self.horizon_ms
        try:
            # aiokafka fetches while this callback runs: hold the partitions until the seek.
            consumer.pause(*assigned)
            for tp in sorted(assigned):
                committed = await consumer.committed(tp)
                progress = plan(
                    committed, await self._replay_start(tp, horizon_start), horizon_start
                )
                try:
                    consumer.seek(tp, progress.next_offset)
                except IllegalStateError:  # revoked again meanwhile
                    continue
                self.progress[tp] = progress
                log.info(
                    "partition assigned",
                    extra={
                        "partition": tp.partition,
                        "committed": committed,
                        "seek": progress.next_offset,
                        "live_from": progress.live_from,
                    },
                )
        except Exception as exc:  # aiokafka only logs listener errors: make them fatal
            log.exception("replay set-up failed")
            self.failure = exc
            return
        consumer.resume(*assigned)

    async def _replay_start(self, tp: TopicPartition, horizon_start: int) -> int:
        assert self._consumer is not None
        # Without an answer, from the beginning: the timestamp filter keeps the horizon.
        return await kafka.offset_at(self._consumer, tp, horizon_start)

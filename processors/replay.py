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

With checkpoints (state_topic.py), a partition whose checkpoint can be trusted is restored
instead: each patient's state is put back, the consumer seeks to the oldest record offset
of the checkpoint, and each patient is fed only the records after its own record's offset
(`Progress.feeds`), whatever their age. Records below max(c, the newest checkpoint offset)
are silent: their detections were acknowledged before the checkpoint was written or the
offset committed. Without a usable checkpoint the partition is replayed as above, where an
episode older than the horizon comes back by a later start and another id.

Only what moved pays: aiokafka's rebalances are eager (every member gives up every
partition), so a partition given back to the member that held it keeps the state it had
in memory at the revoke, as if restored from that very checkpoint, without reading the
state topic, unless another member committed past it meanwhile (then its checkpoint is
newer). Kept state of partitions that went elsewhere is dropped once assigned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from processors.engine import Engine
from processors.state_topic import Restored, StateTopic
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
    # Restored from a checkpoint: per patient, the first offset its state has not seen;
    # patients without one from `since_marker` on.
    since: dict[str, int] = field(default_factory=dict)
    since_marker: int = 0

    def feeds(self, patient_id: str, offset: int) -> bool:
        return offset >= self.since.get(patient_id, self.since_marker)

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


def restored(committed: int | None, checkpoint: Restored) -> Progress:
    """Seek to the checkpoint's oldest offset; every record after a patient's is fed."""
    live_from = max(committed or 0, checkpoint.reflects)
    return Progress(
        live_from,
        _NO_HORIZON,
        False,
        checkpoint.replay_from,
        since=checkpoint.since,
        since_marker=checkpoint.marker,
    )


_NO_HORIZON = -(2**63)  # a restored state needs every record after its offset


class ReplayOnAssign(ConsumerRebalanceListener):
    """Keeps `progress` per assigned partition; the engine's state follows assignment."""

    def __init__(
        self,
        engine: Engine,
        horizon_ms: int,
        clock: Callable[[], int],
        state: StateTopic | None = None,
        save: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.horizon_ms = horizon_ms
        self.clock = clock
        self.state = state
        self.save = save  # checkpoints partitions about to be revoked
        self.progress: dict[TopicPartition, Progress] = {}
        self.failure: Exception | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned = False  # an assignment was set up (the group joined at least once)
        self._kept: dict[TopicPartition, Restored] = {}  # state at the last revoke

    def bind(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    def live(self) -> bool:
        """Every assigned partition restored and its tail replayed: this member's
        patients are watched. False before the first assignment and during set-up."""
        if self._consumer is None or not self._assigned or self.failure is not None:
            return False
        progress = self.progress
        return all(
            tp in progress and not progress[tp].replaying for tp in self._consumer.assignment()
        )

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Checkpoint what is live, then drop: the next owner (maybe this one) restores.
        if self.save is not None:
            try:
                await self.save(revoked)
            except Exception:  # the last good checkpoint stays: only a longer replay
                log.exception("checkpoint on revoke failed")
        for tp in revoked:
            progress = self.progress.pop(tp, None)
            if self.state is not None and progress is not None and not progress.replaying:
                self._kept[tp] = self._as_checkpoint(tp, progress.next_offset)
            self.engine.drop_partition(tp)
            if self.state is not None:
                self.state.forget(tp.partition)

    def _as_checkpoint(self, tp: TopicPartition, offset: int) -> Restored:
        """The partition's state now, as a checkpoint at `offset` would restore it."""
        patients = self.engine.patients(tp)
        return Restored(offset, dict.fromkeys(patients, offset), patients)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None, "bind() the consumer first"
        horizon_start = self.clock() - self.horizon_ms
        try:
            # aiokafka fetches while this callback runs: hold the partitions until the seek.
            consumer.pause(*assigned)
            for tp in sorted(assigned):
                committed = await consumer.committed(tp)
                found = kept = self._kept.pop(tp, None)
                if kept is not None and committed is not None and committed > kept.marker:
                    found = None  # another member went further: its checkpoint is newer
                if found is None and self.state is not None:
                    found = await self.state.load(tp.partition)
                if found is not None:
                    self.engine.drop_partition(tp)
                    self.engine.restore(tp, found.patients)
                    progress = restored(committed, found)
                else:
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
                        "restored": found is not None,
                        "kept": found is not None and found is kept,
                    },
                )
        except Exception as exc:  # aiokafka only logs listener errors: make them fatal
            log.exception("replay set-up failed")
            self.failure = exc
            return
        finally:
            self._kept.clear()  # what went to other members is theirs now
        self._assigned = True
        consumer.resume(*assigned)

    async def _replay_start(self, tp: TopicPartition, horizon_start: int) -> int:
        assert self._consumer is not None
        # Without an answer, from the beginning: the timestamp filter keeps the horizon.
        return await kafka.offset_at(self._consumer, tp, horizon_start)

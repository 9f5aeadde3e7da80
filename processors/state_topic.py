"""The processor's checkpoints on vitals.processor-state: written in rounds, read on assignment.

Partition p of the state topic holds the checkpoints of input partition p (as Quix Streams'
and Kafka Streams' changelogs do), so a restore reads one partition. A round for input
partition p at offset o writes every patient's record (offset o), then the marker, then
tombstones for patients that were in the last round and no longer have state. Each patient
record stands alone: it is that patient's state after every record of p below its offset,
and patients are independent in the engine. So a round cut short by a crash or a rebalance
leaves records of two rounds, each still true for its patient: the restore replays from the
oldest offset and feeds each patient only the records after its own (`Restored.since`). A
patient without a record had no state at the marker's offset.

The marker also holds where its round began on this topic, so a restore finds the last
marker near the end and reads from its round on: one round or two, however many rounds
the partition holds. Compaction keeps only each key's latest record, but the broker
compacts closed segments only, and late (by default a segment closes at 1 GiB or after a
week): reading from the beginning would read every round since, past the restore's bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from processors import checkpoint, metrics
from processors.checkpoint import CheckpointError
from processors.engine import PatientState
from vitals import contract, kafka
from vitals.settings import Settings

log = logging.getLogger(__name__)

# How long an assignment may spend reading one partition's checkpoint: three partitions
# of them stay within the consumers' session (10 s).
RESTORE_TIMEOUT_S = 3.0
# Records read back from the end at first when looking for the last marker: a round ends
# with its marker and a few tombstones; the window grows fourfold until a marker is in it.
MARKER_WINDOW = 16
NO_RECORD = -1  # in a marker: its round wrote no patient record, it begins at the marker


@dataclass(slots=True)
class Restored:
    """A partition's last checkpoint: the state, and from where each patient is fed."""

    marker: int  # patients without a record had no state at this offset
    since: dict[str, int] = field(default_factory=dict)  # per patient: its record's offset
    patients: dict[str, PatientState] = field(default_factory=dict)

    @property
    def replay_from(self) -> int:
        return min([self.marker, *self.since.values()])

    @property
    def reflects(self) -> int:
        """Detections of every input record below this were acknowledged before any
        record was written, so records below it are replayed silently."""
        return max([self.marker, *self.since.values()])


class StateTopic:
    """Reads and writes one processor's checkpoints; `stop()` when done."""

    def __init__(self, settings: Settings, fingerprint: bytes) -> None:
        self.settings = settings
        self.topic = settings.topic(contract.PROCESSOR_STATE)
        self.fingerprint = fingerprint
        self._reader: AIOKafkaConsumer = kafka.consumer(settings, None)
        self._written: dict[int, set[str]] = {}  # per partition: patients of the last round
        self._started = False

    async def stop(self) -> None:
        if self._started:
            await self._reader.stop()
            self._started = False

    async def load(self, partition: int) -> Restored | None:
        """The partition's checkpoint; None (said in one line, no patient id) when there
        is none to trust, and the caller replays as without checkpoints."""
        try:
            # Read within the rebalance: a state partition whose leader is moving (a broker
            # frozen or killed) must not hold the assignment past the group's timeouts,
            # or the member is expelled and its commits are refused. Full replay instead.
            async with asyncio.timeout(RESTORE_TIMEOUT_S):
                latest = await self._read(partition)
        except (TimeoutError, KafkaError) as exc:
            log.warning(
                "checkpoint unreadable: full replay",
                extra={"partition": partition, "error": type(exc).__name__},
            )
            await self._renew_reader()  # a read cut short may leave it mid-request
            return None
        marker = latest.pop(checkpoint.key(partition), None)
        if marker is None:
            why = "incomplete checkpoint" if latest else "no checkpoint"
            log.info(f"{why}: full replay", extra={"partition": partition})
            return None
        try:
            restored = Restored(checkpoint.decode(marker, self.fingerprint).offset)
            for raw, value in latest.items():
                record = checkpoint.decode(value, self.fingerprint)
                _, patient_id = checkpoint.split_key(raw)
                restored.since[patient_id] = record.offset
                restored.patients[patient_id] = record.state
        except CheckpointError as exc:
            log.warning(
                "checkpoint unusable: full replay",
                extra={"partition": partition, "reason": str(exc)},
            )
            return None
        self._written[partition] = set(restored.since)
        return restored

    async def write(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        offset: int,
        patients: dict[str, PatientState],
    ) -> None:
        """One round: every patient, then the marker, then tombstones; each acknowledged
        before the next step starts."""
        sent = [
            await producer.send(
                self.topic,
                checkpoint.encode(offset, self.fingerprint, state),
                key=checkpoint.key(partition, patient_id),
                partition=partition,
            )
            for patient_id, state in patients.items()
        ]
        written = await asyncio.gather(*sent)
        first = min((meta.offset for meta in written), default=NO_RECORD)
        marker = checkpoint.encode(offset, self.fingerprint, first)
        await producer.send_and_wait(
            self.topic, marker, key=checkpoint.key(partition), partition=partition
        )
        gone = self._written.get(partition, set()) - patients.keys()
        await asyncio.gather(
            *[
                await producer.send(
                    self.topic, None, key=checkpoint.key(partition, p), partition=partition
                )
                for p in gone
            ]
        )
        self._written[partition] = set(patients)

    async def _renew_reader(self) -> None:
        await self.stop()
        self._reader = kafka.consumer(self.settings, None)

    def forget(self, partition: int) -> None:
        self._written.pop(partition, None)

    async def _read(self, partition: int) -> dict[bytes, bytes]:
        """Each key's latest value in the partition (tombstones remove the key)."""
        if not self._started:  # at the first assignment, as the group's consumer is started
            await self._reader.start()
            self._started = True
        tp = TopicPartition(self.topic, partition)
        self._reader.assign([tp])
        begin = (await self._reader.beginning_offsets([tp]))[tp]
        end = (await self._reader.end_offsets([tp]))[tp]
        start = await self._last_round_start(tp, begin, end)
        latest: dict[bytes, bytes] = {}
        async for record in self._records(tp, start, end):
            if record.key is None:
                continue
            if record.value is None:
                latest.pop(record.key, None)
            else:
                latest[record.key] = record.value
        metrics.CHECKPOINT_RECORDS_READ.inc(end - start)
        return latest

    async def _last_round_start(self, tp: TopicPartition, begin: int, end: int) -> int:
        """Where the round of the partition's last marker began; `begin` when there is no
        marker, it cannot be read here, or it predates markers that say (load() then
        reads everything and judges as before)."""
        marker_key = checkpoint.key(tp.partition)
        window = MARKER_WINDOW
        while True:
            at = max(begin, end - window)
            marker = None
            async for record in self._records(tp, at, end):
                if record.key == marker_key:
                    marker = record
            metrics.CHECKPOINT_RECORDS_READ.inc(end - at)
            if marker is not None:
                if marker.value is None:  # the marker deleted: no checkpoint
                    return begin
                try:
                    first = checkpoint.decode(marker.value, self.fingerprint).state
                except CheckpointError:
                    return begin
                if not isinstance(first, int):
                    return begin
                return marker.offset if first == NO_RECORD else first
            if at == begin:
                return begin
            window *= 4

    async def _records(self, tp: TopicPartition, start: int, end: int) -> AsyncIterator[Any]:
        """The partition's records from `start` up to `end`."""
        self._reader.seek(tp, start)
        while await self._reader.position(tp) < end:
            batch = await self._reader.getmany(tp, timeout_ms=1_000)
            for record in batch.get(tp, []):
                if record.offset < end:
                    yield record

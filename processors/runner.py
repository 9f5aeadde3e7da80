"""`vitals process`: the Kafka shell around the engine.

vitals.readings (group settings.processor_group) -> engine -> vitals.detections and
vitals.news2 (NEWS2 score changes), keyed by patient. A batch's detections and scores are
produced and acknowledged before the handler returns;
only then does the consumer loop commit, and only for live partitions (replay.py). Bad
messages go to vitals.deadletter with their origin. The loop's tick checks device silence
on live partitions and forgets idle series.

Checkpoints (state_topic.py) are written between batches, so a round only holds state
whose detections are acknowledged: every `checkpoint_interval_s` from the tick, for the
partitions being revoked (unless a batch of theirs is in flight: their last round stays
good), and on SIGTERM before the group is left (within the shutdown grace).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka.structs import ConsumerRecord, TopicPartition

from processors import metrics
from processors.engine import Engine
from processors.replay import Progress, ReplayOnAssign
from processors.rules import rules_from_settings
from processors.state_topic import StateTopic
from vitals import contract, lifecycle
from vitals.consumer import ConsumerLoop
from vitals.errors import ContractError
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings

log = logging.getLogger(__name__)

STAGE = "processor"


async def run(settings: Settings) -> None:
    """What `vitals process` runs: until SIGTERM or SIGINT, then the process exits while
    the state is still held (lifecycle.exit_now): nothing of it needs freeing."""
    processor = Processor(settings)
    await processor.run(stop_on_signals())
    lifecycle.exit_now()


async def run_processor(
    settings: Settings, stop: asyncio.Event, *, clock: Callable[[], int] = contract.now_ms
) -> None:
    await Processor(settings, clock=clock).run(stop)


class Processor:
    """The processor stage: a consumer loop, the engine, and replay on assignment."""

    def __init__(self, settings: Settings, *, clock: Callable[[], int] = contract.now_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.rules = rules_from_settings(settings)  # ConfigError before touching Kafka
        self.engine = Engine(self.rules)
        self.state = (
            StateTopic(settings, self.rules.fingerprint)
            if settings.checkpoint_interval_s > 0
            else None
        )
        self.replay = ReplayOnAssign(
            self.engine, self.rules.horizon_ms, clock, self.state, self.checkpoint
        )
        self._in_flight: set[TopicPartition] = set()  # partitions of the batch in handle()
        self._last_round = time.monotonic()
        self.loop = ConsumerLoop(
            settings,
            stage=STAGE,
            group_id=settings.processor_group,
            topics=[contract.READINGS],
            listener=self.replay,
            tick=self.tick,
            tick_interval_s=settings.silence_check_interval_s,
            on_stop=self.final_round,
            # Not ready while any assigned partition is restoring or replaying: a rolling
            # update waits for this pod to watch its patients before taking the next one.
            ready_if=self.replay.live,
        )
        self.replay.bind(self.loop.consumer)
        self._detections_topic = settings.topic(contract.DETECTIONS)
        self._scores_topic = settings.topic(contract.NEWS2_SCORES)
        self._exporter = metrics.CountsExporter()

    async def run(self, stop: asyncio.Event) -> None:
        if self.state is None:
            await self.loop.run(self.handle, stop)
            return
        try:
            await self.loop.run(self.handle, stop)
        finally:
            await self.state.stop()

    async def checkpoint(self, partitions: set[TopicPartition]) -> None:
        """A round for each live partition among `partitions` with no batch in flight."""
        if self.state is None:
            return
        for tp in sorted(partitions - self._in_flight):
            progress = self.replay.progress.get(tp)
            if progress is None or progress.replaying:
                continue  # its last round (or none) stays the one to restore
            patients = self.engine.patients(tp)
            await self.state.write(self.loop.producer, tp.partition, progress.next_offset, patients)
            metrics.CHECKPOINTS.inc()

    async def checkpoint_all(self) -> None:
        await self.checkpoint(set(self.replay.progress))
        self._last_round = time.monotonic()

    async def final_round(self) -> None:
        """The SIGTERM round, bounded by the shutdown grace: with the brokers away an
        idempotent producer waits for ever. A round cut short leaves each patient's last
        good record (state_topic.py), so the next owner only replays a longer tail."""
        try:
            async with asyncio.timeout(self.settings.shutdown_grace_s):
                await self.checkpoint_all()
        except TimeoutError:
            log.warning(
                "checkpoint at stop cut short: the last rounds stay",
                extra={"after_s": self.settings.shutdown_grace_s},
            )

    async def handle(self, records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
        """Feed a batch; publish its live detections and scores; return the offsets safe
        to commit."""
        self._check_replay()
        self._in_flight = {TopicPartition(r.topic, r.partition) for r in records}
        try:
            return await self._handle(records)
        finally:
            self._in_flight = set()

    async def _handle(self, records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
        # The partitions' progress at this batch: a rebalance during the awaits below
        # replaces it, and the batch's remaining records for that partition are left to
        # the new assignment's replay.
        batch_progress = dict(self.replay.progress)
        now = self.clock()
        detections: list[contract.Detection] = []
        scores: list[contract.News2Score] = []
        touched: set[TopicPartition] = set()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            progress: Progress | None = batch_progress.get(tp)
            if progress is None or self.replay.progress.get(tp) is not progress:
                continue
            if record.offset < progress.next_offset:  # fetched before a seek
                continue
            live = record.offset >= progress.live_from
            touched.add(tp)
            progress.next_offset = record.offset + 1
            progress.last_timestamp = record.timestamp
            if not live:
                progress.replayed += 1
                metrics.REPLAYED.inc()
            if progress.skips(record.offset, record.timestamp):
                metrics.SKIPPED.labels("beyond_horizon").inc()
            else:
                try:
                    upload = contract.decode_upload(record.value)
                except ContractError as exc:
                    # Parked when first seen live; a replay only skips it again.
                    if live:
                        await self.loop.park(record, exc)
                    else:
                        metrics.SKIPPED.labels("undecodable").inc()
                else:
                    if progress.feeds(upload.patient_id, record.offset):
                        found = self.engine.feed(
                            tp, upload, now=now, scores=scores if live else None
                        )
                        if live:
                            detections.extend(found)
                    else:  # already in the patient's restored state
                        metrics.SKIPPED.labels("checkpointed").inc()
            if not live and not progress.replaying:
                log.info(
                    "partition live",
                    extra={"partition": tp.partition, "replayed": progress.replayed},
                )
        await self._publish(detections, scores)
        self._export()
        return {
            tp: batch_progress[tp].next_offset
            for tp in touched
            if self.replay.progress.get(tp) is batch_progress[tp]
            and not batch_progress[tp].replaying
        }

    async def tick(self) -> None:
        """Device silence on live partitions; forget idle series; gauges."""
        self._check_replay()
        now = self.clock()
        clocks: dict[TopicPartition, int] = {}
        for tp, progress in self.replay.progress.items():
            if progress.replaying:
                continue  # its silence state is not rebuilt yet
            end = self.loop.consumer.highwater(tp)
            if end is not None and progress.next_offset >= end:
                clocks[tp] = now
            elif progress.last_timestamp is not None:
                # Lagging: judge at the arrival time read up to, not at the wall clock,
                # or every device whose uploads are still queued would look silent.
                clocks[tp] = progress.last_timestamp
        await self._publish(self.engine.check_silence(clocks, now))
        self.engine.forget_idle(now)
        interval = self.settings.checkpoint_interval_s
        if interval > 0 and time.monotonic() - self._last_round >= interval:
            await self.checkpoint_all()
        self._export()

    async def _publish(
        self, detections: list[contract.Detection], scores: Sequence[contract.News2Score] = ()
    ) -> None:
        if not detections and not scores:
            return
        producer = self.loop.producer
        sent = [
            await producer.send(
                self._detections_topic, contract.encode_detection(d), key=d.patient_id.encode()
            )
            for d in detections
        ] + [
            await producer.send(
                self._scores_topic, contract.encode_news2_score(s), key=s.patient_id.encode()
            )
            for s in scores
        ]
        await asyncio.gather(*sent)  # acknowledged (acks=all) before anything is committed
        for d in detections:
            metrics.DETECTIONS.labels(d.rule, d.state, d.severity).inc()
        metrics.NEWS2_SCORES.inc(len(scores))
        if detections:
            log.info("detections published", extra={"count": len(detections)})

    def _check_replay(self) -> None:
        if self.replay.failure is not None:
            raise self.replay.failure

    def _export(self) -> None:
        metrics.WINDOWS.set(self.engine.windows_held())
        metrics.READINGS_HELD.set(self.engine.readings_held())
        metrics.REPLAYING.set(sum(p.replaying for p in self.replay.progress.values()))
        self._exporter.export(self.engine.counts)

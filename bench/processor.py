"""Processor scenario: readings/s (and per CPU-second) through `vitals process` consuming
vitals.readings, against Quix Streams over the same topic and data; and the processor with
1 and 2 instances in its group.

Every side runs as its own process(es) with a fresh consumer group over the same topic,
filled once. Progress is read the same way for every side, from the group's committed
offsets: the clock starts at the first commit (so start-up and the group join are left
out) and stops when the commits reach the end of every partition.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from bench import data, procs, quix_peer
from bench.infra import Infra
from bench.report import Row
from bench.stats import Summary, Target
from vitals import contract, kafka
from vitals.errors import InfrastructureError
from vitals.settings import Settings
from vitalsctl import stages

PARTITIONS = 6


@dataclass(frozen=True, slots=True)
class Drain:
    readings_per_s: float
    readings_per_cpu_s: float


async def create_topics(settings: Settings, partitions: int = PARTITIONS) -> None:
    """The pipeline's topics, the input with explicit retention configs (which Quix needs
    on tansu) and `partitions` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # retention.bytes too: Quix reads it, and tansu does not report its default.
        configs = {**kafka.topic_configs(settings, contract.READINGS), "retention.bytes": "-1"}
        topic = NewTopic(settings.topic(contract.READINGS), partitions, 1, topic_configs=configs)
        await admin.create_topics([topic])
    finally:
        await admin.close()
    await kafka.create_topics(settings)


async def fill(settings: Settings, uploads: int, patients: int) -> dict[TopicPartition, int]:
    """Create the topics and fill the input; returns each partition's end offset."""
    topic = settings.topic(contract.READINGS)
    await create_topics(settings)
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        batch = data.fleet_uploads(uploads, patients, contract.now_ms())
        await data.produce(producer, topic, batch)
    finally:
        await producer.stop()
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def _committed(
    reader: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    # tansu closes the connection on the admin OffsetFetch; a consumer of the group that
    # never subscribes (so never joins) reads the same commits.
    offsets = {}
    for tp in tps:
        offset = await reader.committed(tp)
        if offset is not None and offset >= 0:
            offsets[tp] = offset
    return offsets


async def watch(
    bootstrap: str,
    group: str,
    ends: dict[TopicPartition, int],
    pids: list[int],
    readings_per_message: int,
    window_s: float,
    give_up_s: float,
) -> Drain:
    """Rate of `group`'s commits, from its first commit until it reached every partition's
    end or `window_s` passed, measured at the last commit that moved (so neither the
    start-up nor an idle tail counts, and a slow peer need not drain the whole topic)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await reader.start()
    try:
        deadline = time.monotonic() + give_up_s
        first: tuple[float, int, float] | None = None
        last: tuple[float, int, float] | None = None
        total = sum(ends.values())
        while time.monotonic() < deadline:
            committed = await _committed(reader, list(ends))
            done = sum(min(committed.get(tp, 0), end) for tp, end in ends.items())
            now = time.perf_counter()
            if first is None:
                if done > 0:
                    first = last = (now, done, _cpu(pids))
            elif done > last[1]:  # type: ignore[index]
                last = (now, done, _cpu(pids))
            if first is not None and last is not None:
                if done >= total or now - first[0] >= window_s:
                    if last[1] == first[1]:
                        raise InfrastructureError(f"{group}: too few commits to measure a rate")
                    readings = (last[1] - first[1]) * readings_per_message
                    return Drain(
                        readings / (last[0] - first[0]),
                        readings / max(last[2] - first[2], 1e-9),
                    )
            await asyncio.sleep(0.05)
        raise InfrastructureError(f"{group} made no measurable progress within {give_up_s:.0f}s")
    finally:
        await reader.stop()


def _cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(pid) for pid in pids)


def _drain(
    infra: Infra,
    settings: Settings,
    ends: dict[TopicPartition, int],
    side: str,
    window_s: float,
    profile: Path | None = None,
) -> Drain:
    group = f"bench-{side.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    env = infra.env(settings.model_copy(update={"processor_group": group}))
    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    started = []
    try:
        if side == "quix":
            started.append(
                procs.spawn(
                    quix_peer.argv(
                        settings.kafka_bootstrap,
                        settings.topic(contract.READINGS),
                        group,
                        state_dir,
                    ),
                    env,
                    infra.logs / "quix.log",
                )
            )
        else:
            instances = 2 if side == "project x2" else 1
            for i in range(instances):
                started.append(
                    procs.spawn(
                        stages.argv("processor"),
                        env,
                        infra.logs / f"processor-{i}.log",
                        profile,
                    )
                )
        return asyncio.run(
            watch(
                settings.kafka_bootstrap,
                group,
                ends,
                [p.pid for p in started],
                data.READINGS_PER_UPLOAD,
                window_s,
                give_up_s=window_s + 60,
            )
        )
    finally:
        for proc in started:
            procs.stop_profiled(proc) if profile else procs.stop(proc)
        shutil.rmtree(state_dir, ignore_errors=True)


def run(
    infra: Infra, uploads: int, reps: int, window_s: float, profile: Path | None = None
) -> list[Row]:
    """The scenario's rows; with `profile`, one more drain of the project under py-spy."""
    settings = infra.settings("proc", topic_partitions=PARTITIONS)
    ends = asyncio.run(fill(settings, uploads, patients=300))
    sides = ["project", "quix", "project x2"]
    out: dict[str, list[Drain]] = {side: [] for side in sides}
    for rep in range(reps):
        order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
        for side in order:
            out[side].append(_drain(infra, settings, ends, side, window_s))
    if profile is not None:
        _drain(infra, settings, ends, "project", window_s, profile)

    def per_s(side: str) -> Summary:
        return Summary(tuple(d.readings_per_s for d in out[side]))

    def per_cpu(side: str) -> Summary:
        return Summary(tuple(d.readings_per_cpu_s for d in out[side]))

    size = f"{uploads * data.READINGS_PER_UPLOAD:,} readings in {uploads:,} uploads"
    return [
        Row(
            "processor",
            "readings/s per core (per CPU-second)",
            "readings/s",
            per_cpu("project"),
            per_cpu("quix"),
            "Quix Streams",
            Target("ratio_at_least", 10.0),
            f"{size}, {PARTITIONS} partitions; Quix: 60 s sliding mean of heart rate per patient",
        ),
        Row(
            "processor",
            "readings/s (wall clock)",
            "readings/s",
            per_s("project"),
            per_s("quix"),
            "Quix Streams",
        ),
        Row(
            "scale-out",
            "processor readings/s, 2 instances vs 1",
            "readings/s",
            per_s("project x2"),
            per_s("project"),
            "1 instance",
            note="two `vitals process` in one group on a 2-core machine shared with the broker",
        ),
    ]

"""Reading what the pipeline wrote to its topics, and what its groups committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.support.polling import WAIT_S, until
from vitals import contract, kafka
from vitals.contract import Detection
from vitals.settings import Settings


async def produced(settings: Settings) -> list[ConsumerRecord]:
    """Every message on the readings topic. The gateway answered 202 only after the broker
    acknowledged, so the end offsets already count everything it accepted."""
    return await read_all(settings, contract.READINGS)


class TopicReader:
    """Reads a whole topic from the beginning, without a group."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.topic = settings.topic(name)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        self.partitions = [TopicPartition(self.topic, p) for p in range(settings.topic_partitions)]
        self.records: list[ConsumerRecord] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self) -> list[ConsumerRecord]:
        batches = await self.consumer.getmany(timeout_ms=100)
        self.records += [r for part in batches.values() for r in part]
        return self.records

    async def to_end(self) -> list[ConsumerRecord]:
        """Everything up to the current end offsets."""
        ends = await self.consumer.end_offsets(self.partitions)

        async def at_end() -> bool:
            await self.poll()
            positions = [await self.consumer.position(tp) for tp in ends]
            return all(at >= end for at, end in zip(positions, ends.values(), strict=True))

        await until(at_end, f"the end of {self.topic}")
        return self.records


def detections(records: Sequence[ConsumerRecord]) -> list[Detection]:
    return [contract.decode_detection(r.value) for r in records]


async def wait_for_detection(reader: TopicReader, rule: str, state: str) -> Detection:
    async def seen() -> bool:
        return any(d.rule == rule and d.state == state for d in detections(await reader.poll()))

    await until(seen, f"{rule} {state}")
    return next(d for d in detections(reader.records) if d.rule == rule and d.state == state)


async def committed_offsets(settings: Settings) -> dict[int, int]:
    topic = settings.topic(contract.READINGS)
    # A member that never subscribes only reads the group's offsets.
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.processor_group,
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        found = {}
        for p in range(settings.topic_partitions):
            offset = await reader.committed(TopicPartition(topic, p))
            if offset is not None:
                found[p] = offset
        return found
    finally:
        await reader.stop()


async def read_all(settings: Settings, name: str) -> list[ConsumerRecord]:
    """Every record of a topic, up to its end offsets at the time of the call."""
    topic = settings.topic(name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Offset look-ups queue behind the fetcher's long poll: keep that poll short.
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        parts = await kafka.partitions(consumer, topic)
        ends = await consumer.end_offsets(parts)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[ConsumerRecord] = []
        async with asyncio.timeout(WAIT_S):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=200)
                found += [r for part in batches.values() for r in part]
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        parts = await kafka.partitions(consumer, topic)
        ends = await consumer.end_offsets(parts)
        return {tp.partition: offset for tp, offset in ends.items() if offset}
    finally:
        await consumer.stop()


@asynccontextmanager
async def group_offsets(settings: Settings, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    # A member that never subscribes only reads the group's offsets (OffsetFetch); tansu
    # does not answer the admin client's variant of that request.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def committed(reader: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    committed = {}
    for tp in await kafka.partitions(reader, topic):
        offset = await reader.committed(tp)
        if offset is not None and offset >= 0:
            committed[tp.partition] = offset
    return committed

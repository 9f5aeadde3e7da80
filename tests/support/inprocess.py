"""The processor and the sinks run as tasks in the test's process, stopped as SIGTERM would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.runner import Processor, run_processor
from sinks.alerts.escalation import Escalator
from sinks.timescale.runner import run_sink
from tests.support.polling import WAIT_S, until
from tests.support.topics import committed, committed_offsets, end_offsets, group_offsets
from vitals import contract
from vitals.settings import Settings


async def all_committed(settings: Settings) -> None:
    topic = settings.topic(contract.READINGS)
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await probe.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = {tp.partition: o for tp, o in (await probe.end_offsets(parts)).items() if o}
    finally:
        await probe.stop()

    async def caught_up() -> bool:
        return await committed_offsets(settings) == ends

    await until(caught_up, "the processor to commit every offset")


async def take_first_generation(settings: Settings) -> None:
    """Join the group once with a short session, and go.

    tansu numbers a group's first generation 0, and aiokafka sends LeaveGroup only for
    generations above 0: the first member of a group never leaves it, and whoever joins
    next waits for its session to expire. A throwaway member with a 1 s session takes
    that generation so the processors under test come and go as they would on Kafka.
    """
    member = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.processor_group,
        session_timeout_ms=1_000,
        heartbeat_interval_ms=300,
        enable_auto_commit=False,
    )
    await member.start()
    try:
        member.subscribe([settings.topic(contract.READINGS)])

        async def assigned() -> bool:
            await member.getmany(timeout_ms=100)
            return bool(member.assignment())

        await until(assigned, "the throwaway member's assignment")
    finally:
        await member.stop()


@asynccontextmanager
async def stage_task(
    run: Callable[..., Awaitable[None]], settings: Settings, **options: Any
) -> AsyncIterator[asyncio.Task[None]]:
    """`run(settings, stop, **options)` as a task until the block ends, then stopped as
    SIGTERM would (the stop event set, the task awaited)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, **options))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def processor(settings: Settings) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    """A processor running until the block ends, then stopped as SIGTERM would."""
    return stage_task(run_processor, settings)


def running(proc: Processor) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    """A processor the test built (to reach its state) running until the block ends."""
    return stage_task(lambda _settings, stop: proc.run(stop), proc.settings)


async def sink_committed(settings: Settings) -> None:
    topic = settings.topic(contract.READINGS)
    ends = await end_offsets(settings, topic)
    async with group_offsets(settings, settings.sink_group) as reader:

        async def caught_up() -> bool:
            return await committed(reader, topic) == ends

        await until(caught_up, "the sink to commit every offset")


def timescale_sink(settings: Settings) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    """The TimescaleDB sink running until the block ends, then stopped as SIGTERM would."""
    return stage_task(run_sink, settings)


@asynccontextmanager
async def escalating(settings: Settings) -> AsyncIterator[Escalator]:
    stop = asyncio.Event()
    escalator = Escalator(settings)
    task = asyncio.create_task(escalator.run(stop))
    try:
        yield escalator
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

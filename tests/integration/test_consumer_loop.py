"""The shared consume loop on a real broker: commits, and a commit lost to a rebalance."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from vitals import contract, kafka
from vitals.consumer import ConsumerLoop
from vitals.settings import Settings


def _lost(stage: str) -> float:
    return REGISTRY.get_sample_value("vitals_commits_lost_total", {"stage": stage}) or 0.0


async def _produce(settings: Settings, n: int) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(settings.topic(contract.READINGS), b"x", key=b"%d" % i)
    finally:
        await producer.stop()


async def test_a_commit_lost_to_a_rebalance_is_counted_and_the_loop_goes_on(
    settings: Settings,
) -> None:
    """A handler still busy when a second member joins: its commit is refused (the
    partitions moved), the loop logs and counts it instead of crashing."""
    stage = "test-rebalance"
    group = f"{settings.topic_prefix}rebalance"
    first = ConsumerLoop(settings, stage=stage, group_id=group, topics=[contract.READINGS])
    second = ConsumerLoop(settings, stage=stage, group_id=group, topics=[contract.READINGS])
    busy, handled_after = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def slow_handler(records: Sequence[ConsumerRecord]) -> None:
        seen.extend(r.offset for r in records)
        if not busy.is_set():
            busy.set()
            # Hold the batch until the group has moved partitions to the second member.
            while not second.consumer.assignment():  # noqa: ASYNC110 - polled state, no event
                await asyncio.sleep(0.1)
        else:
            handled_after.set()

    async def idle_handler(records: Sequence[ConsumerRecord]) -> None:
        handled_after.set()

    before = _lost(stage)
    stop = asyncio.Event()
    await _produce(settings, 30)
    task = asyncio.create_task(first.run(slow_handler, stop))
    await asyncio.wait_for(busy.wait(), 60)
    task2 = asyncio.create_task(second.run(idle_handler, stop))
    await _produce(settings, 30)
    await asyncio.wait_for(handled_after.wait(), 90)
    assert not task.done(), "the loop stopped on a lost commit"
    stop.set()
    await asyncio.wait_for(asyncio.gather(task, task2), 60)
    assert _lost(stage) == before + 1

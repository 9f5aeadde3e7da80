"""The shared consume loop on a real broker: commits, and a commit lost to a rebalance."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from tests.support.polling import until
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


async def test_the_loop_lets_other_tasks_run_between_batches_of_buffered_records(
    settings: Settings,
) -> None:
    """A replay: batches with nothing to publish or commit, from records already
    fetched. getmany() then returns without suspending, so without a yield the loop would
    hold the event loop for the whole buffer and the heartbeat task would starve (the
    session expired mid-replay at 1,000 patients, and the replay began again)."""
    loop = ConsumerLoop(
        settings,
        stage="test-yield",
        group_id=f"{settings.topic_prefix}yield",
        topics=[contract.READINGS],
        max_records=lambda: 5,
    )
    await _produce(settings, 200)
    turns = 0  # how often another task got the event loop
    seen_at: list[int] = []

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def replaying(records: Sequence[ConsumerRecord]) -> dict:
        seen_at.append(turns)
        return {}  # nothing to commit yet: no await in the batch

    stop = asyncio.Event()
    other = asyncio.create_task(other_task())
    task = asyncio.create_task(loop.run(replaying, stop))
    try:
        await until(lambda: len(seen_at) >= 40, "the loop to go through the records")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        other.cancel()
    # Every batch after the first began after the other task had run again.
    assert all(b > a for a, b in zip(seen_at, seen_at[1:], strict=False)), seen_at


def _lag(stage: str, settings: Settings) -> dict[int, float]:
    """The stage's lag series on vitals.readings, by partition."""
    topic = settings.topic(contract.READINGS)
    return {
        int(sample.labels["partition"]): sample.value
        for metric in REGISTRY.collect()
        if metric.name == "vitals_consumer_lag"
        for sample in metric.samples
        if sample.labels["stage"] == stage and sample.labels["topic"] == topic
    }


async def test_lag_grows_while_a_batch_is_stuck_falls_to_zero_and_goes_with_the_member(
    settings: Settings,
) -> None:
    """The lag gauge follows the broker's end offsets on its own timer: a handler stuck
    (the database down) shows lag growing, not its last value; once the handler is
    through, every partition reads 0; a member that stops drops its series."""
    stage = "test-lag"
    loop = ConsumerLoop(
        settings,
        stage=stage,
        group_id=f"{settings.topic_prefix}lag",
        topics=[contract.READINGS],
        lag_interval_s=0.2,
    )
    release = asyncio.Event()
    started = asyncio.Event()

    async def stuck_handler(records: Sequence[ConsumerRecord]) -> None:
        started.set()
        await release.wait()

    stop = asyncio.Event()
    await _produce(settings, 1)
    task = asyncio.create_task(loop.run(stuck_handler, stop))
    await asyncio.wait_for(started.wait(), 60)
    await _produce(settings, 40)
    # The first message is in the stuck batch, uncommitted: all 41 are behind.
    await until(lambda: sum(_lag(stage, settings).values()) == 41, "lag of 41 while stuck")
    assert set(_lag(stage, settings)) == {0, 1, 2}
    release.set()
    await until(
        lambda: _lag(stage, settings) == {0: 0.0, 1: 0.0, 2: 0.0}, "lag 0 on every partition"
    )
    stop.set()
    await asyncio.wait_for(task, 60)
    assert _lag(stage, settings) == {}

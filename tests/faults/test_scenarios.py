"""Every failure of the issue, one at a time, under load; each checked against the ledger.

Each test runs one scenario (tests.faults.scenario.run) and fails with the list of broken
promises: readings answered 202 and not stored, or stored twice; refused readings stored;
expected alerts missing, duplicated or unexpected; lag not back to zero within the bound.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.faults.checks import TopicReader, assert_kept
from tests.faults.conftest import SCENARIOS
from tests.faults.infra import Broker, PrivatePostgres
from tests.faults.load import LoadPlan
from tests.faults.scenario import after, in_thread, nothing, restart, run
from tests.support.polling import until
from tests.support.stages import Stages
from vitals import contract, kafka
from vitals.settings import Settings

pytestmark = pytest.mark.faults

SCENARIOS += [
    "no fault (reference)",
    "kill -9 gateway",
    "kill -9 processor (alone)",
    "kill -9 processor (second instance running)",
    "kill -9 processor right after a checkpoint round",
    "kill -9 sink timescale",
    "kill -9 sink alerts",
    "broker frozen 5 s",
    "broker frozen, gateway killed meanwhile",
    "PostgreSQL stopped 4 s",
    "poison messages",
    "client retries every upload",
    "rebalance during open episodes",
    "every message delivered twice",
]


async def test_reference_run_without_fault(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    verdict, _ = await run(
        "no fault (reference)", "none", pipeline, fault_settings, alert_topic, nothing
    )
    assert_kept(verdict)
    assert verdict.uploads_refused == 1  # the 422 upload: refusals are really exercised


async def test_gateway_killed_mid_load(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    async def inject() -> float:
        await after(3)
        await in_thread(pipeline.kill, "gateway")
        await after(1)
        return await restart(pipeline, "gateway")

    verdict, _ = await run(
        "kill -9 gateway",
        "gateway SIGKILL at 3 s, restarted 1 s later",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert_kept(verdict)
    unanswered = verdict.statuses.get("0", 0) + verdict.statuses.get("-1", 0)
    assert unanswered > 0, "the kill should leave some uploads unanswered"


@pytest.mark.parametrize("second", [False, True], ids=["alone", "with-second-instance"])
async def test_processor_killed_mid_episode(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, second: bool
) -> None:
    if second:
        await restart(pipeline, "processor-2")

    async def inject() -> float:
        await after(4)  # the desaturations are open by now
        await in_thread(pipeline.kill, "processor")
        if second:  # the survivor takes the partitions over; no restart
            return time.monotonic()
        await after(1)
        return await restart(pipeline, "processor")

    name = "kill -9 processor " + ("(second instance running)" if second else "(alone)")
    text = "processor SIGKILL at 4 s, " + (
        "second instance takes over" if second else "restarted 1 s later"
    )
    verdict, _ = await run(name, text, pipeline, fault_settings, alert_topic, inject)
    assert_kept(verdict)


async def test_processor_killed_right_after_a_checkpoint_round(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    """SIGKILL the moment a checkpoint round reaches the state topic, the episodes open:
    the restart must restore every partition from the checkpoints (not replay the
    horizon), replay the tail after them, and lose or repeat no alert. A round covers a
    partition only when no batch of it is in flight, so its offset is already committed:
    the order "checkpoint ahead of the commit" does not arise from a kill here, and
    tests/integration/test_processor_state.py sets it up exactly instead."""
    restarted: list[datetime] = []

    async def inject() -> float:
        await after(4)  # the desaturations are open by now
        await next_checkpoint_round(fault_settings, timeout_s=30)
        await in_thread(pipeline.kill, "processor")
        await after(1)
        restarted.append(datetime.now(UTC))
        return await restart(pipeline, "processor")

    verdict, _ = await run(
        "kill -9 processor right after a checkpoint round",
        "processor SIGKILL as soon as a checkpoint round (every 2 s) is on the state topic,"
        " 4 s into the load; restarted 1 s later, restoring from it",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    restored = restored_since(pipeline, "processor", restarted[0])
    if restored != {True}:
        verdict.problems.append(f"partitions assigned after the restart, restored: {restored}")
    assert_kept(verdict)


async def next_checkpoint_round(settings: Settings, timeout_s: float) -> None:
    """Returns once a record newer than now is on the processor's state topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions(consumer, settings.topic(contract.PROCESSOR_STATE))
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # the end as of now, before the next round
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any((await consumer.getmany(timeout_ms=50)).values()):
                return
        raise AssertionError(f"no checkpoint round within {timeout_s:.0f} s")
    finally:
        await consumer.stop()


@pytest.mark.parametrize("sink", ["sink-timescale", "sink-alerts"])
async def test_sink_killed_mid_load(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, sink: str
) -> None:
    at = 4 if sink == "sink-timescale" else 5  # the alerts sink is busy from 4 s on

    async def inject() -> float:
        await after(at)
        await in_thread(pipeline.kill, sink)
        await after(1)
        return await restart(pipeline, sink)

    name = "kill -9 " + sink.replace("-", " ")
    verdict, _ = await run(
        name,
        f"{sink} SIGKILL at {at} s, restarted 1 s later",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert_kept(verdict)


async def test_broker_frozen_longer_than_produce_timeout(
    pipeline: Stages,
    fault_settings: Settings,
    alert_topic: TopicReader,
    broker: Broker,
) -> None:
    frozen_s = 5.0  # the suite's produce timeout is 2 s

    async def inject() -> float:
        await after(3)
        broker.freeze()
        try:
            await after(frozen_s)
        finally:
            broker.thaw()
        return time.monotonic()

    verdict, generator = await run(
        "broker frozen 5 s",
        "every broker node SIGSTOP at 3 s for 5 s (produce timeout 2 s), then SIGCONT; "
        "patients without an event do not retry (their failures stay unknown)",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        plan=LoadPlan(odd_patients_give_up=True),
    )
    assert_kept(verdict)
    # The gateway answered 503 (Retry-After) promptly instead of holding requests.
    slow = [
        round(s, 1)
        for u in generator.ledger.uploads
        for status, s in zip(u.attempts, u.answered_after_s, strict=True)
        if status == 503 and s > 2.0 + 1.5
    ]
    assert verdict.statuses.get("503", 0) > 0, "the freeze should have produced 503s"
    assert verdict.uploads_unknown > 0, "some uploads should have stayed unknown"
    assert not slow, f"503s answered later than produce timeout + 1.5 s: {slow}"


async def test_gateway_killed_while_broker_frozen(
    pipeline: Stages,
    fault_settings: Settings,
    alert_topic: TopicReader,
    broker: Broker,
) -> None:
    """Uploads waiting for Kafka's acknowledgement die with the gateway: none of them may
    have been answered 202 (a 202 must mean Kafka has it)."""

    async def inject() -> float:
        await after(3)
        broker.freeze()
        try:
            await after(2.5)
            await in_thread(pipeline.kill, "gateway")
        finally:
            broker.thaw()
        return await restart(pipeline, "gateway")

    verdict, _ = await run(
        "broker frozen, gateway killed meanwhile",
        "every broker node SIGSTOP at 3 s; gateway SIGKILL 2.5 s later; SIGCONT; gateway restarted",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert_kept(verdict)


async def test_postgres_stopped_and_restarted_while_sink_writes(
    pipeline: Stages,
    fault_settings: Settings,
    alert_topic: TopicReader,
    postgres: PrivatePostgres,
) -> None:
    async def inject() -> float:
        await after(3)
        await in_thread(postgres.stop, "fast")
        await after(4)
        await in_thread(postgres.start)
        return time.monotonic()

    verdict, _ = await run(
        "PostgreSQL stopped 4 s",
        "pg_ctl stop -m fast at 3 s, started again 4 s later",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert_kept(verdict)


async def test_poison_messages_on_every_consumed_topic(
    pipeline: Stages,
    fault_settings: Settings,
    alert_topic: TopicReader,
    deadletter_topic: TopicReader,
) -> None:
    s = fault_settings
    poison = {
        s.topic(contract.READINGS): [b"not json at all", b'{"v": 99}', b"[1, 2]"],
        s.topic(contract.DETECTIONS): [b"\xff\xfe garbage", b'{"v": 1, "alert_id": 3}'],
        s.topic(contract.NEWS2_SCORES): [b"{not json", b'{"v": 1, "patient_id": "p", "news2": 99}'],
    }
    placed: list[tuple[str, int, int]] = []

    async def inject() -> float:
        await after(3)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic, values in poison.items():
                for value in values:
                    meta = await producer.send_and_wait(topic, value, key=b"poison")
                    placed.append((topic, meta.partition, meta.offset))
        finally:
            await producer.stop()
        return time.monotonic()

    verdict, _ = await run(
        "poison messages",
        "3 undecodable messages on vitals.readings, 2 on vitals.detections, 2 on vitals.news2,"
        " at 3 s",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    # Who must park what: both consumers of readings, the alerts sink for detections, the
    # readings sink for NEWS2 scores.
    readers = {
        s.topic(contract.READINGS): {"processor", "sink-timescale"},
        s.topic(contract.DETECTIONS): {"sink-alerts"},
        s.topic(contract.NEWS2_SCORES): {"sink-timescale"},
    }
    wanted = {(t, p, o, stage) for t, p, o in placed for stage in readers[t]}
    deadline = time.monotonic() + 20
    while True:
        await deadletter_topic.poll(500)
        parked = {
            (d["origin"]["topic"], d["origin"]["partition"], d["origin"]["offset"], d["stage"]): d
            for d in deadletter_topic.seen
        }
        if wanted <= parked.keys() or time.monotonic() > deadline:
            break
    verdict.dead_letters = len(wanted & parked.keys())
    missing = sorted(wanted - parked.keys())
    if missing:
        verdict.problems.append(f"{len(missing)} poison messages not in the dead-letter topic")
    assert_kept(verdict)
    for key in wanted:
        assert parked[key]["error"], f"dead letter without its error: {parked[key]}"
        assert parked[key]["value_b64"], "dead letter without the original message"


async def test_client_retrying_every_upload(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    verdict, _ = await run(
        "client retries every upload",
        "every upload posted again after its answer (alternately with the same "
        "Idempotency-Key and without one)",
        pipeline,
        fault_settings,
        alert_topic,
        nothing,
        plan=LoadPlan(duplicate_every_upload=True),
    )
    assert_kept(verdict)


async def test_rebalance_during_open_episodes(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    """Both rebalances fall inside the episodes, and the test checks that they did. The
    desaturations run from event minute 2 (low readings in, the episode pending) to 7
    (resolved), one event minute every 7 s; the second processor starts once minute 2 is
    in, leaves (SIGTERM) once it was given partitions, and the first must take them all
    back before any episode resolves. (A longer desaturation would widen the window but
    also raise NEWS2, which is not this scenario's event.)"""
    plan = LoadPlan(interval_s=7.0)
    before = len(alert_topic.seen)
    resolved_early: list[dict] = []

    async def inject() -> float:
        await after(2.3 * plan.interval_s)  # minute 2 posted: the episodes are under way
        joined = datetime.now(UTC)
        await restart(pipeline, "processor-2")
        await until(
            lambda: assigned_since(pipeline, "processor-2", joined), "processor-2's partitions", 60
        )
        left = datetime.now(UTC)
        code = await asyncio.to_thread(pipeline.terminate, "processor-2")
        assert code == 0
        partitions = fault_settings.topic_partitions
        await until(  # the first member takes every partition back
            lambda: len(assigned_since(pipeline, "processor", left)) == partitions,
            "every partition back with the first processor",
            60,
        )
        await alert_topic.poll(200)
        resolved_early.extend(a for a in alert_topic.seen[before:] if a["state"] == "resolved")
        return time.monotonic()

    verdict, _ = await run(
        "rebalance during open episodes",
        "once the episodes were under way: a second processor added, removed (SIGTERM) once"
        " it held partitions, the first one given them all back; all before any resolved",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        plan=plan,
    )
    if resolved_early:
        verdict.problems.append(
            f"{len(resolved_early)} episodes resolved before the rebalances were over"
        )
    assert_kept(verdict)


def assigned_since(pipeline: Stages, name: str, since: datetime) -> set[int]:
    """The partitions a processor logged as assigned to it since `since` (replay.py)."""
    return {line["partition"] for line in _assignments(pipeline, name, since)}


def restored_since(pipeline: Stages, name: str, since: datetime) -> set[bool]:
    """Whether each assignment since `since` was restored from a checkpoint (replay.py)."""
    return {line["restored"] for line in _assignments(pipeline, name, since)}


def _assignments(pipeline: Stages, name: str, since: datetime) -> list[dict]:
    log = pipeline.logs / f"{name}.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [
        line
        for line in map(orjson.loads, filter(lambda text: text.startswith("{"), lines))
        if line.get("msg") == "partition assigned" and datetime.fromisoformat(line["ts"]) >= since
    ]


async def _redeliver(settings: Settings, topic: str, prefix: str) -> int:
    """Produce again, byte for byte, every message of this scenario's patients on `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        name = settings.topic(topic)
        tps = await kafka.partitions(consumer, name)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        again = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                again += [r for r in records if (r.key or b"").startswith(prefix.encode())]
        for r in again:
            await producer.send_and_wait(name, r.value, key=r.key, partition=r.partition)
        return len(again)
    finally:
        await producer.stop()
        await consumer.stop()


async def test_every_message_delivered_twice(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    """What at-least-once may do at worst: a crash after the output, before the commit,
    redelivers; here every reading message and every detection of the scenario is
    delivered a second time, once the alerts went out."""
    prefix = f"p-{uuid.uuid4().hex[:6]}-"
    counts: dict[str, int] = {}

    async def inject() -> float:
        deadline = time.monotonic() + 60
        expected = 2 * (LoadPlan().patients // 2)  # opened + resolved per desaturation
        while time.monotonic() < deadline:
            await alert_topic.poll(500)
            mine = [a for a in alert_topic.seen if a["patient_id"].startswith(prefix)]
            if len(mine) >= expected:
                break
        for topic in (contract.READINGS, contract.DETECTIONS):
            counts[topic] = await _redeliver(fault_settings, topic, prefix)
        return time.monotonic()

    verdict, _ = await run(
        "every message delivered twice",
        "once the alerts are out, every readings and detections message of the "
        "scenario produced again, byte for byte",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        prefix=prefix,
    )
    verdict.injection += f" ({counts[contract.READINGS]} + {counts[contract.DETECTIONS]})"
    assert counts[contract.DETECTIONS] > 0, "no detections to redeliver"
    assert_kept(verdict)

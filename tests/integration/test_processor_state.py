"""The processor's checkpoints on a real broker: bad ones fall back to a full replay, and
state older than the replay horizon (a 12-hour episode, a 12-hour silence) survives."""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from processors import checkpoint, state_topic
from processors.rules import rules_from_settings
from processors.runner import Processor
from processors.state_topic import StateTopic
from tests.support.episodes import STEP_MS, episode, send, spo2
from tests.support.inprocess import all_committed, processor, running
from tests.support.metrics import sample
from tests.support.polling import WAIT_S, until
from tests.support.topics import TopicReader, committed_offsets, detections, wait_for_detection
from vitals import contract, kafka
from vitals.contract import Reading, Upload
from vitals.rules_file import DEFAULT_RULES_FILE
from vitals.settings import Settings

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


async def latest_state(settings: Settings) -> dict[tuple[int, bytes], bytes | None]:
    """Each key's latest record on the state topic, by (partition, key)."""
    async with TopicReader(settings, contract.PROCESSOR_STATE) as reader:
        records = await reader.to_end()
    return {(r.partition, r.key): r.value for r in records}


async def put_state(settings: Settings, partition: int, key: bytes, value: bytes | None) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        topic = settings.topic(contract.PROCESSOR_STATE)
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def spoil(settings: Settings, patient: str, how: str) -> int:
    """Spoil the patient's checkpoint as `how` says; returns its partition."""
    state = await latest_state(settings)
    ((partition, key, value),) = [
        (p, k, v) for (p, k), v in state.items() if v and k.endswith(f"/{patient}".encode())
    ]
    if how == "missing":  # the partition as if never checkpointed
        await put_state(settings, partition, key, None)
        await put_state(settings, partition, checkpoint.key(partition), None)
    elif how == "truncated":
        await put_state(settings, partition, key, value[: len(value) // 2])
    elif how == "older-version":  # the header's version field, after the magic
        older = struct.pack(">H", checkpoint.STATE_VERSION - 1)
        await put_state(settings, partition, key, value[:4] + older + value[6:])
    return partition


@pytest.mark.parametrize(
    ("how", "message", "reason"),
    [
        ("missing", "no checkpoint: full replay", None),
        ("truncated", "checkpoint unusable: full replay", "truncated checkpoint record"),
        (
            "older-version",
            "checkpoint unusable: full replay",
            f"state version {checkpoint.STATE_VERSION - 1}, this processor reads "
            f"{checkpoint.STATE_VERSION}",
        ),
        ("other-rules", "checkpoint unusable: full replay", "written under another rules file"),
    ],
)
async def test_a_checkpoint_that_cannot_be_used_is_said_and_replaced_by_a_full_replay(
    own: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
    message: str,
    reason: str | None,
) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 60.0})
    patient = f"p-{how}"
    start = contract.now_ms() - 20 * 60_000
    onset, breach, _ = episode(patient, start)
    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await send(own, onset, breach)
        await wait_for_detection(reader, "spo2_low", "opened")
        await all_committed(own)
    # Stopped gracefully: the SIGTERM round holds the open episode. Then it is spoilt.
    partition = None if how == "other-rules" else await spoil(own, patient, how)
    if how == "other-rules":  # the same rules, another file: another fingerprint
        edited = tmp_path / "rules.toml"
        edited.write_text(DEFAULT_RULES_FILE.read_text() + "\n# reviewed again\n")
        own = own.model_copy(update={"rules_file": str(edited)})
    await send(own, spo2(patient, start + 17 * STEP_MS, [85, 86, 84, 85]))
    await send(own, spo2(patient, start + 21 * STEP_MS, [95] * 8))
    replayed_before = sample("vitals_processor_replayed_records_total")

    caplog.set_level(logging.INFO, logger="processors.state_topic")
    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
        found = detections(await reader.to_end())

    said = [r for r in caplog.records if r.getMessage() == message]
    assert said, [r.getMessage() for r in caplog.records]
    if partition is not None:
        assert partition in {r.__dict__["partition"] for r in said}
    if reason is not None:
        assert reason in {r.__dict__["reason"] for r in said}
    assert all(patient not in r.getMessage() + str(r.__dict__) for r in said)
    # A full replay: the records within the horizon were fed again, and the episode goes
    # on under its id, resolved once, with its worst value.
    assert sample("vitals_processor_replayed_records_total") - replayed_before >= 2
    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[0].alert_id == found[1].alert_id
    assert found[1].at == start + 27 * STEP_MS and found[1].value == 84


async def commit(settings: Settings, offsets: dict[int, int]) -> None:
    """Set the processor group's committed offsets, by input partition."""
    group = kafka.consumer(settings, settings.processor_group)
    await group.start()
    try:
        topic = settings.topic(contract.READINGS)
        tps = {TopicPartition(topic, p): offset for p, offset in offsets.items()}
        group.assign(list(tps))  # a manual assignment may commit for its group unjoined
        await group.commit(tps)
    finally:
        await group.stop()


async def commit_from_the_start(settings: Settings) -> None:
    """The group committed offset 0 on every partition holding records, as a processor
    that was running before the history arrived: every record is then live, whatever its
    age (a new group would skip what is older than the horizon)."""
    probe = kafka.consumer(settings, None)
    await probe.start()
    try:
        topic = settings.topic(contract.READINGS)
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    await commit(settings, {tp.partition: 0 for tp, end in ends.items() if end})


def low_for_hours(patient: str, start: int, hours: int) -> list[Upload]:
    """SpO2 at 84-86 % every 10 s for `hours`, one upload per 10 minutes, each received
    as its last reading was taken."""
    uploads = []
    for block in range(hours * 6):
        t0 = start + block * 600_000
        readings = tuple(
            Reading("spo2", t0 + i * STEP_MS, 84.0 + (block + i) % 3, "%") for i in range(60)
        )
        uploads.append(
            Upload(str(uuid.uuid4()), "gw-test", "oxi-1", patient, readings[-1].t, readings)
        )
    return uploads


async def send_as_arrived(settings: Settings, uploads: list[Upload]) -> None:
    for upload in uploads:  # each record stamped with its arrival, as the gateway does
        await send(settings, upload, timestamp_ms=upload.received)


async def test_a_12_hour_episode_keeps_its_id_across_a_restart(own: Settings) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 60.0})
    patient = "p-12h-episode"
    start = contract.now_ms() - 12 * HOUR_MS - 10 * 60_000  # the last low one 10 min ago
    await send_as_arrived(own, low_for_hours(patient, start, 12))
    await commit_from_the_start(own)

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        opened = await wait_for_detection(reader, "spo2_low", "opened")
        await all_committed(own)
    # Restarted 12 hours into the desaturation, far past the horizon (2 h 15 min): only
    # the checkpoint knows the episode. SpO2 recovers now.
    await send(own, spo2(patient, contract.now_ms() - 5 * 60_000, [95, 96] * 4))
    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        resolved = await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
        found = [d for d in detections(await reader.to_end()) if d.rule == "spo2_low"]

    assert [d.state for d in found] == ["opened", "resolved"]
    assert resolved.alert_id == opened.alert_id
    assert opened.episode_start == resolved.episode_start < start + 10 * 60_000
    assert not resolved.retrospective and resolved.value == 84


async def test_a_device_silent_for_12_hours_is_still_silent_after_a_restart(
    own: Settings,
) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 60.0})
    last = contract.now_ms() - 12 * HOUR_MS
    await send(
        own, spo2("p-12h-quiet", last - 20_000, [97, 97, 97], received=last), timestamp_ms=last
    )
    await commit_from_the_start(own)

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        opened = await wait_for_detection(reader, "device_silence", "opened")
        await all_committed(own)
    # Restarted: the device's last upload is 12 hours old, far past the horizon.
    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await send(own, spo2("p-12h-quiet", contract.now_ms() - 5_000, [98]))
        resolved = await wait_for_detection(reader, "device_silence", "resolved")
        found = [d for d in detections(await reader.to_end()) if d.rule == "device_silence"]

    assert [d.state for d in found] == ["opened", "resolved"]  # not opened a second time
    assert resolved.alert_id == opened.alert_id
    assert opened.episode_start == resolved.episode_start == last


class MarkerHeld:
    """A producer whose next send_and_wait (a round's marker) waits for `go`: the round's
    patient records are written, its marker not yet."""

    def __init__(self, producer: Any, reached: asyncio.Event, go: asyncio.Event) -> None:
        self._producer, self._reached, self._go = producer, reached, go

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        return await self._producer.send(*args, **kwargs)

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        self._reached.set()
        await self._go.wait()
        return await self._producer.send_and_wait(*args, **kwargs)


async def test_a_rebalance_in_the_middle_of_a_checkpoint_round_loses_and_repeats_nothing(
    own: Settings,
) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 1.0})
    patient = "p-mid-round"
    start = contract.now_ms() - 20 * 60_000
    onset, breach, recovery = episode(patient, start)
    first = Processor(own)
    assert first.state is not None
    write = first.state.write
    reached, go = asyncio.Event(), asyncio.Event()
    held = False

    async def held_once(producer: Any, partition: int, offset: int, patients: Any) -> None:
        nonlocal held
        if patient in patients and not held:  # the first round that holds the episode
            held = True
            producer = MarkerHeld(producer, reached, go)
        await write(producer, partition, offset, patients)

    first.state.write = held_once  # type: ignore[method-assign]
    stop_first = asyncio.Event()
    first_task = asyncio.create_task(first.run(stop_first))
    try:
        async with TopicReader(own, contract.DETECTIONS) as reader:
            await send(own, onset, breach)
            await wait_for_detection(reader, "spo2_low", "opened")
            await asyncio.wait_for(reached.wait(), WAIT_S)
            # Mid-round: a second instance joins the group, and partitions move to it
            # while the first instance's marker is still held.
            second = Processor(own)
            stop_second = asyncio.Event()
            joining = asyncio.create_task(second.run(stop_second))
            try:
                await until(lambda: second.replay.progress, "the second instance's partitions")
                assert not go.is_set()
                go.set()
                await send(own, recovery)
                await wait_for_detection(reader, "spo2_low", "resolved")
                await all_committed(own)
            finally:
                stop_second.set()
                await asyncio.wait_for(joining, WAIT_S)
            found = [d for d in detections(await reader.to_end()) if d.rule == "spo2_low"]
    finally:
        go.set()
        stop_first.set()
        await asyncio.wait_for(first_task, WAIT_S)

    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[0].alert_id == found[1].alert_id


async def test_a_stop_round_that_cannot_be_written_is_cut_short_and_the_process_stops(
    own: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # With the brokers away an idempotent producer retries for ever; here the round's
    # first write never returns, as then.
    own = own.model_copy(update={"checkpoint_interval_s": 60.0, "shutdown_grace_s": 0.5})
    proc = Processor(own)
    assert proc.state is not None
    write = proc.state.write
    stopping = asyncio.Event()

    async def hangs_at_stop(producer: Any, partition: int, offset: int, patients: Any) -> None:
        if stopping.is_set():
            await asyncio.Event().wait()
        await write(producer, partition, offset, patients)

    proc.state.write = hangs_at_stop  # type: ignore[method-assign]
    await send(own, spo2("p-stop", contract.now_ms() - 60_000, [97, 97]))
    stop = asyncio.Event()
    task = asyncio.create_task(proc.run(stop))
    await all_committed(own)
    stopping.set()
    stop.set()
    await asyncio.wait_for(task, WAIT_S)  # stopped, not held by the round

    said = [r for r in caplog.records if r.getMessage().startswith("checkpoint at stop cut")]
    assert said and said[0].levelname == "WARNING"


async def checkpointed(settings: Settings) -> dict[int, int]:
    """Each input partition's newest checkpoint offset (its marker's), where not 0."""
    fingerprint = rules_from_settings(settings).fingerprint
    state = await latest_state(settings)
    markers = {p: v for (p, k), v in state.items() if v and k == checkpoint.key(p)}
    offsets = {p: checkpoint.decode(v, fingerprint).offset for p, v in markers.items()}
    return {p: offset for p, offset in offsets.items() if offset}


async def restarted_to_recover(
    settings: Settings, recovery: Upload
) -> tuple[list[contract.Detection], float]:
    """Start a processor, send the recovery and wait for the resolution: every spo2_low
    detection on the topic, and how many records the restart replayed."""
    replayed_before = sample("vitals_processor_replayed_records_total")
    async with processor(settings), TopicReader(settings, contract.DETECTIONS) as reader:
        await send(settings, recovery)
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(settings)
        found = [d for d in detections(await reader.to_end()) if d.rule == "spo2_low"]
    return found, sample("vitals_processor_replayed_records_total") - replayed_before


async def test_a_kill_between_a_checkpoint_and_the_offset_commit_repeats_no_alert(
    own: Settings,
) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 60.0})
    onset, breach, recovery = episode("p-kill-before-commit", contract.now_ms() - 20 * 60_000)
    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await send(own, onset, breach)
        opened = await wait_for_detection(reader, "spo2_low", "opened")
        await all_committed(own)
    # Its stop round holds the open episode. A kill -9 after that round and before the
    # offset commit leaves the group's offset before both records, as set here.
    rounds = await checkpointed(own)
    assert list(rounds.values()) == [2]  # one partition: the onset and the breach
    await commit(own, {p: 0 for p in rounds})
    assert await committed_offsets(own) == {p: 0 for p in rounds}
    found, replayed = await restarted_to_recover(own, recovery)

    # The restore sought to the checkpoint, past the committed offset: the two records
    # were not read again (nothing replayed), the alert was opened once, and the episode
    # resolves under its id with its worst value.
    assert replayed == 0
    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[1].alert_id == opened.alert_id and found[1].value == 84


async def test_an_offset_committed_past_the_last_checkpoint_replays_its_tail_silently(
    own: Settings,
) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 60.0})
    onset, breach, recovery = episode("p-commit-before-round", contract.now_ms() - 20 * 60_000)
    async with processor(own):
        await send(own, onset)
        await all_committed(own)
    # A round holds the onset. A processor without rounds (as one killed after its commit
    # and before its next round) opens the episode and commits past that round.
    async with (
        processor(own.model_copy(update={"checkpoint_interval_s": 0.0})),
        TopicReader(own, contract.DETECTIONS) as reader,
    ):
        await send(own, breach)
        opened = await wait_for_detection(reader, "spo2_low", "opened")
        await all_committed(own)
    rounds = await checkpointed(own)
    assert list(rounds.values()) == [1]
    assert await committed_offsets(own) == {p: 2 for p in rounds}
    found, replayed = await restarted_to_recover(own, recovery)

    # The breach, after the checkpoint and below the committed offset, was replayed
    # silently: the episode was not opened again, and resolves under its id.
    assert replayed == 1
    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[1].alert_id == opened.alert_id and found[1].value == 84


async def test_a_restore_reads_the_last_round_not_every_round_the_partition_holds(
    own: Settings,
) -> None:
    """The broker compacts closed segments only, so a state partition holds every round
    of the last hours: a restore that read them all would outgrow its 3 s bound within
    the hour at fleet size. It reads back from the end to the last marker, then from
    where that marker's round began. A marker of before (no position) is read from the
    beginning, as then."""
    own = own.model_copy(update={"checkpoint_interval_s": 0.05})
    patient = f"p-rounds-{uuid.uuid4().hex[:6]}"
    rounds_before = sample("vitals_processor_checkpoints_total")
    async with processor(own):
        await send(own, spo2(patient, contract.now_ms() - 60_000, [96, 97, 96, 95]))
        await all_committed(own)
        await until(
            lambda: sample("vitals_processor_checkpoints_total") - rounds_before >= 60,
            "sixty checkpoint rounds",
        )
    state = await latest_state(own)
    ((partition, _),) = [k for k, v in state.items() if v and k[1].endswith(patient.encode())]
    tp = TopicPartition(own.topic(contract.PROCESSOR_STATE), partition)
    async with TopicReader(own, contract.PROCESSOR_STATE) as reader:
        held = (await reader.consumer.end_offsets([tp]))[tp]
        held -= (await reader.consumer.beginning_offsets([tp]))[tp]
    committed = (await committed_offsets(own))[partition]

    rules = rules_from_settings(own)
    topic = StateTopic(own, rules.fingerprint)
    try:
        read_before = sample("vitals_processor_checkpoint_records_read_total")
        restored = await topic.load(partition)
        read = sample("vitals_processor_checkpoint_records_read_total") - read_before
        assert restored is not None and patient in restored.patients
        # The last round (the stop's): the state as of the committed offset.
        assert restored.marker == restored.since[patient] == committed
        assert held >= 20 * 2  # twenty rounds or more of a record and a marker
        assert read <= state_topic.MARKER_WINDOW + 4, (read, held)

        # A marker as written before markers held their round's position.
        await put_state(
            own,
            partition,
            checkpoint.key(partition),
            checkpoint.encode(committed, rules.fingerprint),
        )
        read_before = sample("vitals_processor_checkpoint_records_read_total")
        restored = await topic.load(partition)
        read = sample("vitals_processor_checkpoint_records_read_total") - read_before
        assert restored is not None and restored.since[patient] == committed
        assert read >= held  # the whole partition, as before
    finally:
        await topic.stop()


async def test_partitions_given_back_after_a_rebalance_keep_their_state_from_memory(
    own: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A second instance joins: every partition is revoked (eager rebalance), those given
    back to the first instance keep the state it held (no state topic read), the others
    are restored by the second; the open episode goes on under its id either way."""
    own = own.model_copy(update={"checkpoint_interval_s": 60.0})
    start = contract.now_ms() - 20 * 60_000
    patients = [f"p-kept-{i}-{uuid.uuid4().hex[:4]}" for i in range(12)]  # every partition
    onsets = [episode(p, start)[0] for p in patients]
    onset, breach, recovery = episode(patients[0], start)
    caplog.set_level(logging.INFO, logger="processors.replay")
    first = Processor(own)
    async with running(first), TopicReader(own, contract.DETECTIONS) as reader:
        await send(own, *onsets, breach)
        await wait_for_detection(reader, "spo2_low", "opened")
        await all_committed(own)
        joined = len(caplog.records)
        second = Processor(own)
        async with running(second):
            await until(lambda: second.replay.live() and first.replay.live(), "both live")
            mine = {tp.partition for tp in first.replay.progress}
            theirs = {tp.partition for tp in second.replay.progress}
            await send(own, recovery)
            await wait_for_detection(reader, "spo2_low", "resolved")
            await all_committed(own)
        found = [d for d in detections(await reader.to_end()) if d.rule == "spo2_low"]

    assigned = [
        r.__dict__ for r in caplog.records[joined:] if r.getMessage() == "partition assigned"
    ]
    kept = {a["partition"] for a in assigned if a["kept"]}
    restored = {a["partition"] for a in assigned if a["restored"] and not a["kept"]}
    assert mine and theirs and not mine & theirs
    assert kept == mine, assigned  # given back: from memory
    assert theirs <= restored, assigned  # moved: from the first's revoke round
    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[0].alert_id == found[1].alert_id

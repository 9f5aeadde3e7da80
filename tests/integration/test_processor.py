"""The processor on a real broker (tansu): detections, dead letters, restarts, silence."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from evaluation.rhythm_validation import synthetic_af
from processors import state_topic
from processors.runner import Processor
from tests.support.episodes import STEP_MS, episode, produce, send, spo2
from tests.support.inprocess import all_committed, processor
from tests.support.metrics import sample
from tests.support.polling import WAIT_S, until
from tests.support.stages import Stages, environment
from tests.support.topics import TopicReader, detections, wait_for_detection
from vitals import contract
from vitals.catalog import METRICS
from vitals.contract import Reading, Upload
from vitals.settings import Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration


# --- helpers -------------------------------------------------------------------------


# --- tests ---------------------------------------------------------------------------


async def test_a_desaturation_gives_one_opened_and_one_resolved(own: Settings) -> None:
    own = own.model_copy(update={"probe_port": localinfra.free_port()})
    start = contract.now_ms() - 20 * 60_000
    hr = Upload(
        str(uuid.uuid4()),
        "gw-test",
        "watch-1",
        "p-calm",
        contract.now_ms(),
        tuple(Reading("heart_rate", start + i * STEP_MS, 72, "/min") for i in range(40)),
    )
    await send(own, hr, *episode("p-desat", start))
    opened_before = sample(
        "vitals_processor_detections_total", rule="spo2_low", state="opened", severity="high"
    )

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{own.probe_port}") as http:
            ready = await http.get("/readyz")
            scraped = (await http.get("/metrics")).text
        found = detections(await reader.to_end())

    assert ready.status_code == 200
    assert [(d.patient_id, d.rule, d.state) for d in found] == [
        ("p-desat", "spo2_low", "opened"),
        ("p-desat", "spo2_low", "resolved"),
    ]
    opened, resolved = found
    assert (
        opened.alert_id
        == resolved.alert_id
        == contract.alert_id("p-desat", "spo2_low", start + 3 * STEP_MS)
    )
    assert (opened.at, opened.value, opened.device_id) == (start + 15 * STEP_MS, 84, "oxi-1")
    assert resolved.at == start + 23 * STEP_MS and not resolved.retrospective
    assert reader.records[0].key == b"p-desat"
    line = 'vitals_processor_detections_total{rule="spo2_low",severity="high",state="opened"}'
    scraped_opened = next(float(x.split()[-1]) for x in scraped.splitlines() if x.startswith(line))
    assert scraped_opened == opened_before + 1
    assert "vitals_processor_windows " in scraped


async def test_a_poison_message_is_parked_with_its_origin_and_processing_goes_on(
    own: Settings,
) -> None:
    start = contract.now_ms() - 20 * 60_000
    parked_before = sample("vitals_dead_letters_total", stage="processor")
    await produce(own, [(b"p-poison", b'{"v": 1, "readings": "nope"}')])
    await send(own, *episode("p-poison", start))

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
    # A restarted processor replays the poison message silently: it is not parked twice.
    async with processor(own):
        await send(own, spo2("p-poison", start + 30 * STEP_MS, [97]))
        await all_committed(own)
    async with TopicReader(own, contract.DEADLETTER) as parked:
        [letter] = await parked.to_end()

    assert sample("vitals_dead_letters_total", stage="processor") - parked_before == 1
    doc = orjson.loads(letter.value)
    assert doc["stage"] == "processor" and doc["error"].startswith("ContractError")
    readings = own.topic(contract.READINGS)
    assert doc["origin"]["topic"] == readings and doc["origin"]["offset"] == 0
    assert letter.key == b"p-poison"


@pytest.mark.parametrize(
    ("checkpoints", "readable"),
    [(True, True), (False, True), (True, False)],
    ids=["checkpointed", "replay-only", "checkpoint-unreadable"],
)
async def test_restart_mid_episode_neither_loses_it_nor_opens_it_again(
    own: Settings, checkpoints: bool, readable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = own.model_copy(update={"checkpoint_interval_s": 60.0 if checkpoints else 0.0})
    start = contract.now_ms() - 20 * 60_000
    onset, breach, recovery = episode("p-restart", start)
    replayed_before = sample("vitals_processor_replayed_records_total")
    skipped_before = sample("vitals_processor_skipped_records_total", reason="beyond_horizon")
    # A record that arrived three hours ago, older than the replay horizon: it would open
    # an episode of its own if anything fed it to the detectors.
    hours_ago = contract.now_ms() - 3 * 3600_000
    await send(
        own,
        spo2("p-restart", hours_ago - 600_000, [80] * 20, received=hours_ago),
        timestamp_ms=hours_ago,
    )

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await send(own, onset, breach)
        await wait_for_detection(reader, "spo2_low", "opened")
        await all_committed(own)
    # Stopped gracefully. The rest of the episode arrives while no processor runs: the
    # desaturation goes on for a while, then SpO2 recovers.
    more = spo2("p-restart", start + 17 * STEP_MS, [85, 86, 84, 85])
    late_recovery = spo2("p-restart", start + 21 * STEP_MS, [95] * 8)
    await send(own, more, late_recovery)
    if not readable:  # the checkpoint cannot be read in time (a state leader moving)
        monkeypatch.setattr(state_topic, "RESTORE_TIMEOUT_S", 0.0)

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
        found = detections(await reader.to_end())

    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[0].alert_id == found[1].alert_id
    assert found[1].at == start + 27 * STEP_MS and found[1].value == 84
    # The second instance replayed the records before its offset that lie within the
    # horizon (two) and fed them to the detectors; the old one never reached them. Apache
    # Kafka answers offsets-for-times, so neither instance read it at all; tansu answers
    # none, so each read it from the partition's start and skipped it.
    replayed = sample("vitals_processor_replayed_records_total") - replayed_before
    skipped = sample("vitals_processor_skipped_records_total", reason="beyond_horizon")
    if checkpoints and readable:  # restored from the round written on SIGTERM
        assert (replayed, skipped - skipped_before) == (0, 0)
    else:
        assert (replayed, skipped - skipped_before) in {(2, 0), (3, 2)}


async def readyz(port: int) -> tuple[int, bytes]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/readyz")
    return response.status_code, response.content


async def test_readiness_is_false_while_a_partition_replays_and_true_once_live(
    own: Settings,
) -> None:
    # Replay-only, so the second instance replays the history below its committed offset.
    own = own.model_copy(update={"checkpoint_interval_s": 0.0})
    await send(own, *episode("p-ready", contract.now_ms() - 20 * 60_000))
    async with processor(own):
        await all_committed(own)

    port = localinfra.free_port()
    proc = Processor(own.model_copy(update={"probe_port": port}))
    replaying, release = asyncio.Event(), asyncio.Event()

    async def held_while_replaying(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
        if any(p.replaying for p in proc.replay.progress.values()):
            replaying.set()
            await release.wait()  # a replay that takes a while
        return await proc.handle(records)

    stop = asyncio.Event()
    task = asyncio.create_task(proc.loop.run(held_while_replaying, stop))
    try:
        await asyncio.wait_for(replaying.wait(), WAIT_S)
        assert await readyz(port) == (503, b'{"ready":false}')
        release.set()

        async def ready() -> bool:
            return (await readyz(port))[0] == 200

        await until(ready, "/readyz once every partition is live")
        assert not any(p.replaying for p in proc.replay.progress.values())
        assert proc.replay.progress  # it holds partitions: ready because they are live
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


async def test_a_failed_replay_set_up_stops_the_processor(own: Settings) -> None:
    # aiokafka only logs what a rebalance listener raises; the processor must not go on
    # without knowing where to replay from. Here the lookup fails for real: the consumer
    # was never started, so it has no assignment to pause.
    failing = Processor(own)
    await failing.replay.on_partitions_assigned({TopicPartition(own.topic(contract.READINGS), 0)})
    assert failing.replay.failure is not None
    with pytest.raises(type(failing.replay.failure)):
        await failing.tick()
    with pytest.raises(type(failing.replay.failure)):
        await failing.handle([])


async def test_killed_before_commit_the_episode_is_published_again_with_the_same_id(
    own: Settings,
) -> None:
    start = contract.now_ms() - 20 * 60_000
    onset, breach, recovery = episode("p-killed", start)
    await send(own, onset)
    async with processor(own):
        await all_committed(own)

    # The next instance publishes "opened", then dies before committing that batch.
    doomed = Processor(own)
    published = asyncio.Event()

    async def die_before_commit(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
        offsets = await doomed.handle(records)
        if any(r.offset >= 1 for r in records):  # the breach: "opened" is published
            published.set()
            await asyncio.Event().wait()  # never returns: the loop never commits
        return offsets

    await send(own, breach)
    task = asyncio.create_task(doomed.loop.run(die_before_commit, asyncio.Event()))
    await asyncio.wait_for(published.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    await send(own, recovery)

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
        found = detections(await reader.to_end())

    # At least once: the uncommitted batch is processed again and its "opened" published
    # again, with the same deterministic id (the alerts sink dedupes on id and state).
    assert [d.state for d in found] == ["opened", "opened", "resolved"]
    assert len({d.alert_id for d in found}) == 1


async def test_a_new_group_skips_history_older_than_the_replay_horizon(own: Settings) -> None:
    hours_ago = contract.now_ms() - 3 * 3600_000
    old = episode("p-history", hours_ago - 20 * 60_000, received=hours_ago)
    for upload in old:
        await send(own, upload, timestamp_ms=hours_ago)
    await send(own, *episode("p-today", contract.now_ms() - 20 * 60_000))

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await wait_for_detection(reader, "spo2_low", "resolved")
        await all_committed(own)
        found = detections(await reader.to_end())

    assert {d.patient_id for d in found} == {"p-today"}


async def test_a_silent_device_opens_device_silence_and_resolves_on_its_next_upload(
    own: Settings,
) -> None:
    own = own.model_copy(update={"silence_after_s": 2.0})
    first = spo2("p-quiet", contract.now_ms() - 60_000, [97, 97])

    async with processor(own), TopicReader(own, contract.DETECTIONS) as reader:
        await send(own, first)
        opened = await wait_for_detection(reader, "device_silence", "opened")
        await send(own, spo2("p-quiet", contract.now_ms() - 5_000, [98]))
        resolved = await wait_for_detection(reader, "device_silence", "resolved")

    assert (opened.patient_id, opened.device_id, opened.severity) == ("p-quiet", "oxi-1", "low")
    assert opened.episode_start == first.received
    assert opened.at == first.received + 2_000
    assert resolved.alert_id == opened.alert_id


# --- a real `vitals process` killed mid-episode --------------------------------------------


def vitals_readings(patient: str, start: int, rows: Sequence[dict[str, float]]) -> Upload:
    """One upload of the watch's readings every 10 s from `start`: a row per time."""
    readings = tuple(
        Reading(metric, start + i * STEP_MS, v, METRICS[metric].unit)
        for i, row in enumerate(rows)
        for metric, v in row.items()
    )
    return Upload(str(uuid.uuid4()), "gw-test", "watch-1", patient, contract.now_ms(), readings)


def news2_rows(minutes: float, *, ill: bool, seed: int) -> list[dict[str, float]]:
    """Wearable NEWS2 inputs: well (score 0) or ill (RR 2 + HR 2 + SpO2 1 + temp 1 = 6)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(round(minutes * 6)):
        jitter = rng.choice((-1.0, 0.0, 1.0))  # never flat: a flat-line check must not fire
        if ill:
            row = {"heart_rate": 120 + jitter, "resp_rate": 23 + jitter, "spo2": 95.0}
            row["body_temp"] = 38.5 + jitter / 10
        else:
            row = {"heart_rate": 72 + jitter, "resp_rate": 15 + jitter, "spo2": 97.0}
            row["body_temp"] = 36.8 + jitter / 10
        rows.append(row)
    return rows


Halves = tuple[list[Upload], list[Upload]]  # fed before the kill, and after


def news2_episode(patient: str, start: int) -> Halves:
    """Before the kill: 2 min well, 7 min ill (medium opens after 5). After: 5 more min ill,
    then 17 min well (resolves after 15)."""
    parts = [(2, False), (7, True), (5, True), (17, False)]
    uploads, t = [], start
    for i, (minutes, ill) in enumerate(parts):
        uploads.append(vitals_readings(patient, t, news2_rows(minutes, ill=ill, seed=i)))
        t += minutes * 60_000
    return uploads[:2], uploads[2:]


def beats_upload(patient: str, start: int, rr: Sequence[float]) -> tuple[Upload, int]:
    t, readings = start, []
    for value in rr:
        t += round(value)
        readings.append(Reading("rr_interval", t, value, "ms"))
    return Upload(str(uuid.uuid4()), "gw-test", "watch-1", patient, contract.now_ms(),
                  tuple(readings)), t  # fmt: skip


def rhythm_episode(patient: str, start: int) -> Halves:
    """Before the kill: 6 windows of synthetic AF (opens at the 5th). After: 2 more windows
    of AF, then 7 of sinus rhythm (resolves once the last 6 are all regular)."""
    af = synthetic_af(7, 8 * 128)
    rng = random.Random(8)
    sinus = [800 * (1 + 0.03 * math.sin(i / 4) + rng.gauss(0, 0.01)) for i in range(7 * 128)]
    uploads, t = [], start
    for series in (af[: 6 * 128], af[6 * 128 :], sinus):
        upload, t = beats_upload(patient, t, series)
        uploads.append(upload)
    return uploads[:1], uploads[1:]


def processor_stages(own: Settings, logs: Path, **env: str) -> Stages:
    """`vitals process` as a process on the test's broker, topics and group."""
    variables = environment(
        own.kafka_bootstrap,
        own.database_url,
        own.topic_prefix,
        localinfra.free_port(),
        VITALS_PROCESSOR_GROUP=own.processor_group,
        **env,
    )
    return Stages(variables, logs, gateway_port=0)


@pytest.mark.parametrize(
    ("rule", "build"),
    [("news2_medium", news2_episode), ("rhythm_irregular", rhythm_episode)],
    ids=["news2", "rhythm"],
)
async def test_a_killed_processor_process_continues_the_episode_without_a_second_alert(
    own: Settings, tmp_path: Path, rule: str, build: Callable[[str, int], Halves]
) -> None:
    patient = f"p-{rule}"
    before, after = build(patient, contract.now_ms() - 40 * 60_000)
    stages = processor_stages(own, tmp_path)
    try:
        stages.start("processor")
        async with TopicReader(own, contract.DETECTIONS) as reader:
            await send(own, *before)
            opened = await wait_for_detection(reader, rule, "opened")
            await all_committed(own)  # the opening is committed: it must not come again
            await asyncio.to_thread(stages.kill, "processor")  # kill -9
            stages.start("processor")
            await send(own, *after)
            resolved = await wait_for_detection(reader, rule, "resolved")
            await all_committed(own)
            found = [d for d in detections(await reader.to_end()) if d.rule == rule]
            assert stages.running("processor"), f"see {tmp_path}/processor.log"
    finally:
        stages.stop_all()

    assert [d.state for d in found] == ["opened", "resolved"]
    assert opened.alert_id == resolved.alert_id
    assert opened.episode_start == resolved.episode_start
    assert not resolved.retrospective and resolved.patient_id == patient


async def test_news2_score_changes_are_published_keyed_by_patient_before_the_commit(
    own: Settings,
) -> None:
    start = contract.now_ms() - 20 * 60_000

    def vitals(offset_s: int, **values: float) -> Upload:
        t = start + offset_s * 1000
        readings = tuple(Reading(m, t, v, METRICS[m].unit) for m, v in values.items())
        return Upload(str(uuid.uuid4()), "gw-test", "watch-1", "p-news2", t, readings)

    await send(
        own,
        vitals(0, heart_rate=70, resp_rate=16),  # 0, zero
        vitals(10, heart_rate=72),  # unchanged: no record
        vitals(20, heart_rate=115),  # 2, low
        vitals(30, heart_rate=116, resp_rate=17),  # unchanged
    )
    proc = Processor(own)
    before_commit: list[ConsumerRecord] = []

    async def look_then_commit(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
        offsets = await proc.handle(records)
        async with TopicReader(own, contract.NEWS2_SCORES) as reader:  # before the commit
            before_commit[:] = await reader.to_end()
        return offsets

    stop = asyncio.Event()
    task = asyncio.create_task(proc.loop.run(look_then_commit, stop))
    try:
        await all_committed(own)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)

    scores = [contract.decode_news2_score(r.value) for r in before_commit]
    assert [(s.t - start, s.news2, s.band) for s in scores] == [(0, 0, "zero"), (20_000, 2, "low")]
    assert {r.key for r in before_commit} == {b"p-news2"}
    assert sorted(scores[1].parameters) == ["heart_rate", "resp_rate"]
    assert scores[1].parameters["resp_rate"] == contract.ScoredParameter(0, 16.0, 20_000)


SHORT_HORIZON_RULES = """
version = 1
[defaults.spo2_low]
kind = "threshold"
metric = "spo2"
direction = "below"
threshold = 90.0
clear = 92.0
for_s = 20.0
clear_for_s = 10.0
severity = "high"
suppress_s = 0.0
"""


async def test_an_episode_older_than_the_replay_horizon_keeps_its_id_across_a_restart(
    own: Settings, tmp_path: Path
) -> None:
    """The same restart as above with a horizon of 30 s (one rule: 20 s to open, 10 s to
    clear; 10 s of lateness), and a desaturation kept going in real time for longer. The
    processor is killed (-9): its state comes back from its last scheduled checkpoint."""
    rules = tmp_path / "rules.toml"
    rules.write_text(SHORT_HORIZON_RULES)
    patient = "p-long-episode"
    stages = processor_stages(
        own,
        tmp_path,
        VITALS_RULES_FILE=str(rules),
        VITALS_ALLOWED_LATENESS_S="10",
        VITALS_CHECKPOINT_INTERVAL_S="1",
    )
    try:
        stages.start("processor")
        async with TopicReader(own, contract.DETECTIONS) as reader:
            await send(own, spo2(patient, contract.now_ms() - 30_000, [84, 85, 84, 85]))
            await wait_for_detection(reader, "spo2_low", "opened")
            for _ in range(6):  # the desaturation goes on past the horizon, one reading / 10 s
                await asyncio.sleep(STEP_MS / 1000)
                await send(own, spo2(patient, contract.now_ms(), [84]))
            await all_committed(own)
            await asyncio.to_thread(stages.kill, "processor")  # kill -9
            stages.start("processor")
            await send(own, spo2(patient, contract.now_ms(), [95, 95, 96]))
            await wait_for_detection(reader, "spo2_low", "resolved")
            await all_committed(own)
            found = [d for d in detections(await reader.to_end()) if d.rule == "spo2_low"]
            assert stages.running("processor"), f"see {tmp_path}/processor.log"
    finally:
        stages.stop_all()

    assert [d.state for d in found] == ["opened", "resolved"], found
    assert found[0].alert_id == found[1].alert_id

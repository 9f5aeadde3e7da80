"""Replay on restart: how many records a restarted processor reads to rebuild its windows,
and how long until it is live, on Apache Kafka and on tansu, for the same history.

The topic holds `HOURS` of a fleet's uploads, each with its arrival time as the record
timestamp (as the gateway produces them), and the processor's group has committed the
end of every partition (a processor that was live until now). A fresh `vitals process`
then starts: it seeks to the first offset within its replay horizon (offsets-for-times)
and reads up to the committed offsets silently. Apache Kafka answers the look-up; tansu
does not, so the processor reads each partition from its start and skips what is older
than the horizon. Read = replayed + skipped as beyond the horizon (its own counters).
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import data, procs
from bench.infra import Infra
from bench.report import Row
from bench.stats import Summary
from vitals import contract, kafka
from vitals.errors import InfrastructureError
from vitals.settings import Settings
from vitalsctl import localinfra, stages

HOURS = 6.0
PATIENTS = 20


async def fill_history(settings: Settings, hours: float, patients: int) -> int:
    """`hours` of uploads for `patients`, stamped with their arrival; the processor's group
    committed at the end of every partition. Returns how many messages."""
    await kafka.create_topics(settings)
    topic = settings.topic(contract.READINGS)
    span_ms = data.READINGS_PER_UPLOAD // 2 * data.STEP_MS
    count = int(hours * 3_600_000 / span_ms) * patients
    now = contract.now_ms()
    history = [
        # Each upload arrives when its last reading was taken.
        dataclasses.replace(u, received=max(r.t for r in u.readings))
        for u in data.fleet_uploads(count, patients, now)
    ]
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        await data.produce(producer, topic, history)
    finally:
        await producer.stop()
    group = kafka.consumer(settings, settings.processor_group)
    await group.start()
    try:
        tps = await kafka.partitions(group, topic)
        group.assign(tps)  # a manual assignment may commit for its group without joining
        await group.commit(await group.end_offsets(tps))
    finally:
        await group.stop()
    return count


def measure(infra: Infra, label: str) -> tuple[float, float, int]:
    """(seconds from start to live, records read, messages in the topic) for one fresh
    processor over a filled history."""
    settings = infra.settings(f"replay-{label}")
    messages = asyncio.run(fill_history(settings, HOURS, PATIENTS))
    port = localinfra.free_port()
    env = {**infra.env(settings), "VITALS_PROBE_PORT": str(port)}
    started = time.monotonic()
    proc = procs.spawn(stages.argv("processor"), env, infra.logs / f"replay-{label}.log")
    try:
        read = _until_live(f"http://127.0.0.1:{port}/metrics", proc, 300)
        return time.monotonic() - started, read, messages
    finally:
        procs.stop(proc)


def _until_live(url: str, proc: subprocess.Popen[bytes], give_up_s: float) -> float:
    """Records read once every assigned partition is live (nothing replaying, something
    read): the processor's own counters."""
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfrastructureError("the processor exited during the replay benchmark")
        try:
            text = httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        found = {
            (s.name, s.labels.get("reason")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        replaying = found.get(("vitals_processor_replaying_partitions", None), 0.0)
        read = found.get(("vitals_processor_replayed_records_total", None), 0.0) + found.get(
            ("vitals_processor_skipped_records_total", "beyond_horizon"), 0.0
        )
        if read > 0 and replaying == 0:
            return read
        time.sleep(0.1)
    raise InfrastructureError(f"the processor was not live after {give_up_s:.0f} s")


def run(on_kafka: Infra, on_tansu: Infra, reps: int) -> list[Row]:
    kafka_runs = [measure(on_kafka, f"kafka-{i}") for i in range(reps)]
    tansu_runs = [measure(on_tansu, f"tansu-{i}") for i in range(reps)]
    messages = kafka_runs[0][2]
    note = (
        f"{HOURS:g} h of history for {PATIENTS} patients ({messages:,} messages of "
        f"{data.READINGS_PER_UPLOAD} readings), group committed at the end; a fresh "
        "processor replays its horizon (2 h 15 min with the built-in rules)"
    )
    return [
        Row(
            "replay on restart",
            "messages read to rebuild the windows",
            "messages",
            Summary(tuple(r[1] for r in kafka_runs)),
            Summary(tuple(r[1] for r in tansu_runs)),
            "tansu (no offsets-for-times)",
            note=note,
        ),
        Row(
            "replay on restart",
            "start → every partition live",
            "s",
            Summary(tuple(r[0] for r in kafka_runs)),
            Summary(tuple(r[0] for r in tansu_runs)),
            "tansu (no offsets-for-times)",
        ),
    ]

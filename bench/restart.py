"""A processor's restart at fleet scale (issue 19): checkpointed against replay-only.

History: `--hours` (2.5 by default, past the 2 h 15 min replay horizon) of `vitals
burden`'s population for `--patients` (heart rate and SpO2 every 5 s, respiration every
30 s, RR tachograms, uploads every 60 s with outages that hold some back), shifted to end
now, each upload stamped with its arrival, on a readings topic of 6 partitions. Then, for
each design, on topics and a group of its own (the same history produced again):

1. checkpointed: `vitals process` starts (a new group: it reads its horizon, live) and
   works through to the end of every partition; its RSS and longest GC pause are read
   there; then SIGTERM: seconds until it logs "stopped" (group left, after the SIGTERM
   checkpoint round) and until the process is gone. Replay-only: the group commits the
   end of every partition instead (a processor live until now; its state is rebuilt by
   the replay either way, and on a shared 2-core machine the live run takes long);
2. started again: seconds until its /readyz answers 200 (every partition restored and its
   tail replayed), and until the desaturation of a patient uploaded right after the
   start is on vitals.detections.

The designs: checkpointed (VITALS_CHECKPOINT_INTERVAL_S=60), replay-only (0, the peer:
the design before issue 19), and Quix Streams (`bench/quix_peer.py`: RocksDB state with
changelog topics, its recovery) over the same history, started again twice: with its state
folder kept (a pod with a persistent volume) and with an empty one (a new pod: recovery
from the changelog). Quix has no readiness probe and no detector: an upload is sent to
every partition right after its start, and it is live on a partition once its group
committed past that upload. One run side by side: read the ratios.

`python -m bench.restart [--patients 1000] [--hours 2.5] [--designs ...] [--out bench/results]`
(`python -m bench --only restart` runs it with the other scenarios' report.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench import data, processor, procs, quix_peer
from bench.infra import Infra, infrastructure
from bench.machine import describe, load_averages
from bench.report import Row
from bench.state import fleet
from bench.stats import Summary, Target
from evaluation import population
from vitals import contract, kafka
from vitals.contract import Reading, Upload
from vitals.errors import InfrastructureError
from vitals.settings import Settings
from vitalsctl import localinfra, stages

DESIGNS = {"checkpointed": 60.0, "replay-only": 0.0}
QUIX = ("quix, state kept", "quix, new pod")
CHOICES = (*DESIGNS, "quix")
PARTITIONS = 6
HOURS = 2.5  # past the 2 h 15 min replay horizon
GIVE_UP_S = 900.0
STOPPED = b'"msg":"stopped"'  # the processor's log line once it has left its group


def history(patients: int, hours: float) -> list[Upload]:
    """The population's uploads, shifted so that the last arrival is now."""
    uploads = fleet(population.Options(patients=patients, hours=hours))
    shift = contract.now_ms() - max(u.received for u in uploads)
    # In place: at 10,000 patients the history is ~50 M readings, and two copies of it
    # would not fit beside the broker and the processor.
    for i, u in enumerate(uploads):
        uploads[i] = dataclasses.replace(
            u,
            received=u.received + shift,
            readings=tuple(r._replace(t=r.t + shift) for r in u.readings),
        )
    # Out of the collector's sight: a full collection over ~50 M tuples takes seconds of
    # the harness's loop, which times the restart.
    gc.collect()
    gc.freeze()
    return uploads


def desaturation(patient: str) -> Upload:
    """Three readings at 96 %, then 140 s at 84-86 %: spo2_low opens (built-in rules)."""
    now = contract.now_ms()
    values = [96, 96, 95, 86, 85, 84, 85, 86, 85, 87, 86, 85, 84, 85, 86, 85, 86]
    start = now - (len(values) - 1) * 10_000
    readings = tuple(Reading("spo2", start + i * 10_000, v, "%") for i, v in enumerate(values))
    return Upload(str(uuid.uuid4()), "gw-bench", "oxi-injected", patient, now, readings)


async def _produce(settings: Settings, uploads: list[Upload]) -> None:
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        await data.produce(producer, settings.topic(contract.READINGS), uploads)
    finally:
        await producer.stop()


async def _caught_up(settings: Settings) -> bool:
    """The group committed the end of every partition of the readings topic."""
    group = kafka.consumer(settings, settings.processor_group)
    await group.start()
    try:
        tps = await kafka.partitions(group, settings.topic(contract.READINGS))
        ends = await group.end_offsets(tps)
        committed = {tp: await group.committed(tp) for tp in tps}
        return all(ends[tp] == 0 or committed[tp] == ends[tp] for tp in tps)
    finally:
        await group.stop()


def _metrics(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise InfrastructureError(f"no VmRSS for {pid}")


def _stop_timed(
    proc: subprocess.Popen[bytes], log: Path, marker: bytes | None = STOPPED
) -> tuple[float | None, float]:
    """SIGTERM; (seconds until `marker` is logged, seconds until the process is gone).
    Quix logs no such line: its first figure is None."""
    size = log.stat().st_size
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stopped = None
    while proc.poll() is None:
        if stopped is None and marker is not None:
            with log.open("rb") as f:
                f.seek(size)
                if marker in f.read():
                    stopped = time.monotonic() - sent
        if time.monotonic() - sent > 120:
            proc.kill()
            raise InfrastructureError(f"{proc.args!r} did not exit within 120 s of SIGTERM")
        time.sleep(0.01)
    gone = time.monotonic() - sent
    if stopped is None and marker is not None:  # logged in the last few milliseconds
        stopped = gone
    return stopped, gone


async def _restart_timed(
    settings: Settings, env: dict[str, str], port: int, log: Path
) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start again, inject an event at once: (process, s to ready, s to its detection)."""
    detections = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await detections.start()
    try:
        tps = await kafka.partitions(detections, settings.topic(contract.DETECTIONS))
        detections.assign(tps)
        await detections.seek_to_end(*tps)
        for tp in tps:
            await detections.position(tp)  # resolve the end now, before the event exists
        patient = f"p-injected-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        proc = procs.spawn(stages.argv("processor"), env, log)
        await _produce(settings, [desaturation(patient)])
        ready = detected = None
        async with httpx.AsyncClient() as client:
            while ready is None or detected is None:
                if proc.poll() is not None:
                    raise InfrastructureError(f"the processor exited: see {log}")
                if time.monotonic() - started > GIVE_UP_S:
                    raise InfrastructureError(f"no detection {GIVE_UP_S:.0f} s after restart")
                if ready is None:
                    try:
                        answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                        if answer.status_code == 200:
                            ready = time.monotonic() - started
                    except httpx.HTTPError:
                        pass
                batches = await detections.getmany(timeout_ms=100)
                for record in (r for part in batches.values() for r in part):
                    found = contract.decode_detection(record.value)
                    if detected is None and found.patient_id == patient:
                        detected = time.monotonic() - started
        return proc, ready, detected
    finally:
        await detections.stop()


def measure(
    infra: Infra, design: str, uploads: list[Upload], logs: Path, partitions: int = PARTITIONS
) -> dict[str, Any]:
    settings = infra.settings(
        f"restart-{design}", topic_partitions=partitions, checkpoint_interval_s=DESIGNS[design]
    ).model_copy(update={"log_level": "INFO"})  # its "stopped" line is timed
    asyncio.run(kafka.create_topics(settings))
    asyncio.run(_produce(settings, uploads))
    port = localinfra.free_port()
    env = {**infra.env(settings), "VITALS_PROBE_PORT": str(port)}
    first: dict[str, Any] = dict.fromkeys(FIRST_RUN)
    if DESIGNS[design]:
        argv = stages.argv("processor")
        first = _first_run(settings, argv, env, port, logs / f"restart-{design}-1.log")
    else:
        asyncio.run(_commit_the_end(settings))
    second_log = logs / f"restart-{design}-2.log"
    second, ready, detected = asyncio.run(_restart_timed(settings, env, port, second_log))
    try:
        after = _metrics(port)
        restarted_rss = _rss_mb(second.pid)
    finally:
        localinfra.stop_process(second)
    return {
        "design": design,
        **first,
        "rss_after_restart_mb": round(restarted_rss, 1),
        "restart_to_ready_s": round(ready, 1),
        "restart_to_detection_s": round(detected, 1),
        "replayed_records": after.get("vitals_processor_replayed_records_total", 0.0),
        "restart_longest_gc_pause_ms": round(
            1000 * after.get("vitals_gc_longest_pause_seconds", 0.0), 1
        ),
    }


FIRST_RUN = (
    "first_run_through_history_s",
    "rss_mb",
    "longest_gc_pause_ms",
    "stopped_after_sigterm_s",
    "exit_after_sigterm_s",
)


def _first_run(
    settings: Settings, argv: list[str], env: dict[str, str], port: int | None, log: Path
) -> dict[str, Any]:
    """Live through the history, then SIGTERM: the FIRST_RUN figures (the GC pause from
    the processor's metrics on `port`; Quix has none)."""
    proc = procs.spawn(argv, env, log)
    try:
        started = time.monotonic()
        while not asyncio.run(_caught_up(settings)):
            if proc.poll() is not None:
                raise InfrastructureError(f"the processor exited: see {log}")
            if time.monotonic() - started > 3 * GIVE_UP_S:
                raise InfrastructureError("the processor did not reach the end of the history")
            time.sleep(1)
        through = time.monotonic() - started
        time.sleep(6)  # a tick or two past the end: memory as it stays
        rss = _rss_mb(proc.pid)
        gc_pause = None if port is None else _metrics(port).get("vitals_gc_longest_pause_seconds")
        stopped, gone = _stop_timed(proc, log, STOPPED if port is not None else None)
    finally:
        localinfra.stop_process(proc)
    values = (
        round(through, 1),
        round(rss, 1),
        None if gc_pause is None else round(1000 * gc_pause, 1),
        None if stopped is None else round(stopped, 2),
        round(gone, 2),
    )
    return dict(zip(FIRST_RUN, values, strict=True))


def measure_quix(
    infra: Infra, uploads: list[Upload], logs: Path, partitions: int = PARTITIONS
) -> list[dict[str, Any]]:
    """Quix Streams through the same history, then started again with its state folder
    kept and then with an empty one: a row for each restart."""
    settings = infra.settings("restart-quix", topic_partitions=partitions)
    asyncio.run(processor.create_topics(settings, partitions))
    asyncio.run(_produce(settings, uploads))
    env = infra.env(settings)
    state = Path(tempfile.mkdtemp(prefix="quix-restart-"))
    topic = settings.topic(contract.READINGS)
    argv = quix_peer.argv(settings.kafka_bootstrap, topic, settings.processor_group, state)
    rows = []
    try:
        first = _first_run(settings, argv, env, None, logs / "restart-quix-1.log")
        for n, design in enumerate(QUIX, start=2):
            if design == "quix, new pod":
                shutil.rmtree(state)
                state.mkdir()
            log = logs / f"restart-quix-{n}.log"
            proc, live = asyncio.run(_quix_restart_timed(settings, argv, env, log))
            try:
                rss = _rss_mb(proc.pid)
                _, gone = _stop_timed(proc, log, marker=None)
            finally:
                localinfra.stop_process(proc)
            changelog = asyncio.run(_changelog_records(settings))
            rows.append(
                {
                    "design": design,
                    **(first if n == 2 else dict.fromkeys(FIRST_RUN)),
                    "rss_after_restart_mb": round(rss, 1),
                    **live,
                    "changelog_records": changelog,
                    "exit_after_sigterm_2_s": round(gone, 2),
                }
            )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return rows


async def _quix_restart_timed(
    settings: Settings, argv: list[str], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], dict[str, float]]:
    """Start Quix again and send an upload to every partition at once: seconds until its
    group committed past the first of them, and past all (every partition live)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.processor_group
    )
    await reader.start()  # never subscribes, so never joins: it only reads the commits
    try:
        started = time.monotonic()
        proc = procs.spawn(argv, env, log)
        sent = await _to_every_partition(settings)
        first = None
        while True:
            if proc.poll() is not None:
                raise InfrastructureError(f"Quix exited: see {log}")
            if time.monotonic() - started > GIVE_UP_S:
                raise InfrastructureError(f"Quix not live {GIVE_UP_S:.0f} s after its restart")
            live = [tp for tp, at in sent.items() if ((await reader.committed(tp)) or 0) > at]
            now = time.monotonic() - started
            if live and first is None:
                first = now
            if len(live) == len(sent):
                return proc, {
                    "restart_to_first_partition_live_s": round(first or now, 1),
                    "restart_to_ready_s": round(now, 1),
                }
            await asyncio.sleep(0.1)
    finally:
        await reader.stop()


async def _to_every_partition(settings: Settings) -> dict[TopicPartition, int]:
    """An upload on every partition of the readings topic; the offset each got."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        topic = settings.topic(contract.READINGS)
        sent = {}
        for partition in sorted(await producer.partitions_for(topic)):
            upload = desaturation(f"p-injected-{partition}-{uuid.uuid4().hex[:6]}")
            value = contract.encode_upload(upload)
            key = upload.patient_id.encode()
            meta = await producer.send_and_wait(topic, value, key=key, partition=partition)
            sent[TopicPartition(topic, partition)] = meta.offset
        return sent
    finally:
        await producer.stop()


async def _changelog_records(settings: Settings) -> int:
    """Records in Quix's changelog topics for this group: what a new pod reads back."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        names = [
            t
            for t in await consumer.topics()
            if t.startswith("changelog__") and settings.processor_group in t
        ]
        if not names:
            raise InfrastructureError("Quix made no changelog topic for the group")
        tps = [tp for t in names for tp in await kafka.partitions(consumer, t)]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def _commit_the_end(settings: Settings) -> None:
    group = kafka.consumer(settings, settings.processor_group)
    await group.start()
    try:
        tps = await kafka.partitions(group, settings.topic(contract.READINGS))
        group.assign(tps)  # a manual assignment may commit for its group without joining
        await group.commit(await group.end_offsets(tps))
    finally:
        await group.stop()


COLUMNS = ("checkpointed", "replay-only", *QUIX)


def table(
    rows: list[dict[str, Any]],
    patients: int,
    readings: int,
    load: str,
    partitions: int = PARTITIONS,
) -> str:
    """Markdown: a column a design, and checkpointed ÷ each peer that restarts from nothing
    kept locally (replay-only, Quix in a new pod)."""
    by = {r["design"]: r for r in rows}
    columns = [c for c in COLUMNS if c in by]
    peers = [c for c in ("replay-only", "quix, new pod") if c in by]
    lines = [
        f"{patients:,} patients, {readings:,} readings in the history, {partitions} partitions;"
        f" load before: {load}",
        "",
        "| measure | " + " | ".join(columns) + "".join(f" | ÷ {p}" for p in peers) + " |",
        "|---" * (1 + len(columns) + len(peers)) + "|",
    ]
    keys = dict.fromkeys(k for r in rows for k in r if k != "design")
    for key in keys:
        cells = [by[c].get(key) for c in columns]
        ours = by.get("checkpointed", {}).get(key)
        ratios = [_ratio(ours, by[p].get(key)) for p in peers]
        lines.append(f"| {key} | " + " | ".join(map(_cell, cells + ratios)) + " |")
    return "\n".join(lines) + "\n"


def _ratio(ours: Any, peer: Any) -> str | None:
    if isinstance(ours, int | float) and isinstance(peer, int | float) and peer:
        return f"{ours / peer:.3f}"
    return None


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return value if isinstance(value, str) else f"{value:,}"


def run(
    infra: Infra,
    designs: list[str],
    uploads: list[Upload],
    logs: Path,
    partitions: int = PARTITIONS,
) -> list[dict[str, Any]]:
    """Each design's figures, one after the other on `infra`; a design that fails gives
    a row with its error, and the others still count."""
    rows: list[dict[str, Any]] = []
    for design in designs:
        try:
            if design == "quix":
                found = measure_quix(infra, uploads, logs, partitions)
            else:
                found = [measure(infra, design, uploads, logs, partitions)]
        except InfrastructureError as exc:
            found = [{"design": design, "error": str(exc)}]
        for row in found:
            print(orjson.dumps(row).decode(), flush=True)
        rows += found
    return rows


def report_rows(rows: list[dict[str, Any]], patients: int) -> list[Row]:
    """The figures `python -m bench` reports (bench/report.py), against the peers."""
    by = {r["design"]: r for r in rows if "error" not in r}
    ours = by.get("checkpointed")
    if ours is None:
        return []
    note = f"{patients:,} patients, {HOURS} h of history, {PARTITIONS} partitions"

    def row(key: str, measure: str, peer: str, name: str, **kw: Any) -> Row | None:
        value, other = ours.get(key), by.get(peer, {}).get(key)
        if value is None:
            return None
        return Row(
            "restart",
            measure,
            "s",
            Summary((value,)),
            None if other is None else Summary((other,)),
            name if other is not None else "",
            **kw,
        )

    found = [
        row(
            "restart_to_ready_s",
            "restart → every partition live",
            "replay-only",
            "replay-only",
            target=Target("below", 10.0),
            note=note,
        ),
        row(
            "restart_to_ready_s",
            "restart → every partition live, vs Quix Streams in a new pod",
            "quix, new pod",
            "Quix Streams (changelog recovery)",
        ),
        row(
            "restart_to_ready_s",
            "restart → every partition live, vs Quix Streams with its state kept",
            "quix, state kept",
            "Quix Streams (local RocksDB)",
        ),
        row(
            "restart_to_detection_s",
            "restart → detection of an event sent right after",
            "replay-only",
            "replay-only",
        ),
        row("exit_after_sigterm_s", "SIGTERM → process gone", "quix, state kept", "Quix Streams"),
    ]
    if ours.get("rss_mb") is not None:
        kb = 1024 * ours["rss_mb"] / patients
        found.append(Row("restart", "processor RSS per patient, live", "KB", Summary((kb,))))
    return [r for r in found if r is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=HOURS)
    parser.add_argument("--designs", nargs="+", choices=CHOICES, default=list(CHOICES))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--logs", type=Path, default=Path(".local") / "bench-restart")
    parser.add_argument(
        "--partitions",
        type=int,
        default=PARTITIONS,
        help="of the readings (and so the state) topic: ≤ 1,000 patients each (operations.md)",
    )
    args = parser.parse_args(argv)
    logs = args.logs
    load = load_averages()
    made = time.monotonic()
    uploads = history(args.patients, args.hours)
    readings = sum(len(u.readings) for u in uploads)
    print(f"history: {len(uploads):,} uploads, {readings:,} readings "
          f"({time.monotonic() - made:.0f} s to make)", flush=True)  # fmt: skip
    with infrastructure(logs) as infra:
        rows = run(infra, args.designs, uploads, logs, args.partitions)
        broker = infra.broker
    print(write(args.out, broker, load, args.patients, args.hours, readings, rows, args.partitions))
    return 0


def write(
    out: Path,
    broker: str,
    load: str,
    patients: int,
    hours: float,
    readings: int,
    rows: list[dict[str, Any]],
    partitions: int = PARTITIONS,
) -> str:
    """restart-<stamp>.json and .md under `out`; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {
        "broker": broker,
        "machine": describe(),
        "load_before": load,
        "patients": patients,
        "hours": hours,
        "readings": readings,
        "partitions": partitions,
        "rows": rows,
    }
    (out / f"restart-{stamp}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    text = f"# Processor restart, checkpointed vs its peers ({stamp})\n\n" + table(
        rows, patients, readings, load, partitions
    )
    (out / f"restart-{stamp}.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())

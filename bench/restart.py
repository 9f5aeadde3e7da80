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

The designs: checkpointed (VITALS_CHECKPOINT_INTERVAL_S=60) and replay-only (0, the peer:
the design before issue 19). One run side by side on a shared machine: read the ratios.

`python -m bench.restart [--patients 1000] [--hours 2.5] [--out bench/results]`
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from bench import data, procs
from bench.infra import Infra, infrastructure
from bench.machine import describe
from bench.state import fleet
from evaluation import population
from vitals import contract, kafka
from vitals.contract import Reading, Upload
from vitals.errors import InfrastructureError
from vitals.settings import Settings
from vitalsctl import localinfra, stages

DESIGNS = {"checkpointed": 60.0, "replay-only": 0.0}
GIVE_UP_S = 900.0


def history(patients: int, hours: float) -> list[Upload]:
    """The population's uploads, shifted so that the last arrival is now."""
    uploads = fleet(population.Options(patients=patients, hours=hours))
    shift = contract.now_ms() - max(u.received for u in uploads)
    return [
        dataclasses.replace(
            u,
            received=u.received + shift,
            readings=tuple(r._replace(t=r.t + shift) for r in u.readings),
        )
        for u in uploads
    ]


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


def _stop_timed(proc: subprocess.Popen[bytes], log: Path) -> tuple[float, float]:
    """SIGTERM; (seconds until "stopped" is logged, seconds until the process is gone)."""
    size = log.stat().st_size
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stopped = None
    while proc.poll() is None:
        if stopped is None:
            with log.open("rb") as f:
                f.seek(size)
                if b'"msg":"stopped"' in f.read():
                    stopped = time.monotonic() - sent
        if time.monotonic() - sent > 120:
            proc.kill()
            raise InfrastructureError("the processor did not exit within 120 s of SIGTERM")
        time.sleep(0.01)
    gone = time.monotonic() - sent
    if stopped is None:  # logged in the last few milliseconds
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


def measure(infra: Infra, design: str, uploads: list[Upload], logs: Path) -> dict[str, Any]:
    settings = infra.settings(
        f"restart-{design}", topic_partitions=6, checkpoint_interval_s=DESIGNS[design]
    ).model_copy(update={"log_level": "INFO"})  # its "stopped" line is timed
    asyncio.run(kafka.create_topics(settings))
    asyncio.run(_produce(settings, uploads))
    port = localinfra.free_port()
    env = {**infra.env(settings), "VITALS_PROBE_PORT": str(port)}
    first: dict[str, Any] = dict.fromkeys(FIRST_RUN)
    if DESIGNS[design]:
        first = _first_run(settings, env, port, logs / f"restart-{design}-1.log")
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


def _first_run(settings: Settings, env: dict[str, str], port: int, log: Path) -> dict[str, Any]:
    """Live through the history, then SIGTERM: the FIRST_RUN figures."""
    proc = procs.spawn(stages.argv("processor"), env, log)
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
        gc_pause = _metrics(port).get("vitals_gc_longest_pause_seconds", 0.0)
        stopped, gone = _stop_timed(proc, log)
    finally:
        localinfra.stop_process(proc)
    values = (
        round(through, 1),
        round(rss, 1),
        round(1000 * gc_pause, 1),
        round(stopped, 2),
        round(gone, 2),
    )
    return dict(zip(FIRST_RUN, values, strict=True))


async def _commit_the_end(settings: Settings) -> None:
    group = kafka.consumer(settings, settings.processor_group)
    await group.start()
    try:
        tps = await kafka.partitions(group, settings.topic(contract.READINGS))
        group.assign(tps)  # a manual assignment may commit for its group without joining
        await group.commit(await group.end_offsets(tps))
    finally:
        await group.stop()


def table(rows: list[dict[str, Any]], patients: int, readings: int, load: str) -> str:
    by = {r["design"]: r for r in rows}
    by = {d: by.get(d, {}) for d in DESIGNS}
    lines = [
        f"{patients:,} patients, {readings:,} readings in the history; load before: {load}",
        "",
        "| measure | checkpointed | replay-only (peer) | ratio |",
        "|---|---|---|---|",
    ]
    keys = dict.fromkeys(k for r in rows for k in r if k != "design")
    for key in keys:
        ours, peer = by["checkpointed"].get(key), by["replay-only"].get(key)
        if isinstance(ours, str) or isinstance(peer, str):  # an error
            lines.append(f"| {key} | {ours or '–'} | {peer or '–'} | – |")
            continue
        ratio = f"{ours / peer:.2f}" if ours is not None and peer else "–"
        lines.append(f"| {key} | {_cell(ours)} | {_cell(peer)} | {ratio} |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=2.5)
    parser.add_argument("--designs", nargs="+", choices=DESIGNS, default=list(DESIGNS))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    logs = Path(".local") / "bench-restart"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    made = time.monotonic()
    uploads = history(args.patients, args.hours)
    readings = sum(len(u.readings) for u in uploads)
    print(f"history: {len(uploads):,} uploads, {readings:,} readings "
          f"({time.monotonic() - made:.0f} s to make)", flush=True)  # fmt: skip
    rows = []
    with infrastructure(logs) as infra:
        for design in args.designs:
            try:
                row = measure(infra, design, uploads, logs)
            except InfrastructureError as exc:  # the other design's figures still count
                row = {"design": design, "error": str(exc)}
            print(orjson.dumps(row).decode(), flush=True)
            rows.append(row)
        broker = infra.broker
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {
        "broker": broker,
        "machine": describe(),
        "load_before": load,
        "patients": args.patients,
        "hours": args.hours,
        "readings": readings,
        "rows": rows,
    }
    (args.out / f"restart-{stamp}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    text = f"# Processor restart, checkpointed vs replay-only ({stamp})\n\n" + table(
        rows, args.patients, readings, load
    )
    (args.out / f"restart-{stamp}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

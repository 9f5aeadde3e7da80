"""How long the processor's group stops processing when an instance restarts or a second
one joins, on the broker the run uses (Apache Kafka's group coordinator by default).

Readings flow in at a steady pace (uploads stamped now, so every one is live); one
`vitals process` runs; then one of the events below, while a watcher samples the group's
committed offsets every 0.1 s. The processor commits a batch only once its output is
acknowledged, so "the commits stopped moving" is "nothing was processed or emitted". The
figure is the longest such gap after the event, beside the longest gap before it (the
steady state: one poll and commit cycle).

`python -m bench.rebalance` prints the figures and writes them to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson

from bench import data
from bench.infra import Infra, infrastructure
from vitals import contract, kafka
from vitals.settings import Settings
from vitalsctl import localinfra, stages

PATIENTS = 60
EVERY_S = 0.5  # between two uploads of the fleet
BEFORE_S, AFTER_S = 8.0, 40.0
# The only instance restarted; a second one joins; the second of two restarted (the
# first keeps emitting but for the joins: its partitions given back come from memory).
EVENTS = ("restart", "join", "restart one of two")


async def _feed(settings: Settings, until: float) -> None:
    """Every EVERY_S, one upload per patient ending now (live, never history)."""
    producer = kafka.producer(settings, linger_ms=5)
    await producer.start()
    try:
        topic = settings.topic(contract.READINGS)
        while time.monotonic() < until:
            batch = data.fleet_uploads(PATIENTS, PATIENTS, contract.now_ms(), per_upload=10)
            await data.produce(producer, topic, batch)
            await asyncio.sleep(EVERY_S)
    finally:
        await producer.stop()


async def _watch(settings: Settings, until: float) -> list[tuple[float, int]]:
    """(time, sum of the group's committed offsets) every 0.1 s."""
    reader = kafka.consumer(settings, settings.processor_group)
    await reader.start()
    samples: list[tuple[float, int]] = []
    try:
        tps = await kafka.partitions(reader, settings.topic(contract.READINGS))
        while time.monotonic() < until:
            total = 0
            for tp in tps:
                offset = await reader.committed(tp)
                total += offset if offset and offset > 0 else 0
            samples.append((time.monotonic(), total))
            await asyncio.sleep(0.1)
    finally:
        await reader.stop()
    return samples


def longest_gap(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """The longest time within [start, end] during which the committed total did not move."""
    moved = [t for (t, total), (_, before) in zip(samples[1:], samples, strict=False)
             if total > before and start <= t <= end]  # fmt: skip
    edges = [start, *moved, end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


def measure(infra: Infra, event: str, logs: Path) -> tuple[float, float]:
    """(longest gap before the event, longest gap after it), seconds."""
    name = event.replace(" ", "-")
    settings = infra.settings(f"rebalance-{name}", topic_partitions=6)
    asyncio.run(kafka.create_topics(settings))
    env = infra.env(settings)
    first = stages.start("processor", env, logs / f"rebalance-{name}-1.log")
    extra = None
    if event == "restart one of two":
        extra = stages.start("processor-2", env, logs / f"rebalance-{name}-2.log")
    try:
        started = time.monotonic()
        event_at = started + 10 + BEFORE_S  # 10 s for the first join and warm-up
        end = event_at + AFTER_S

        async def scenario() -> list[tuple[float, int]]:
            nonlocal first, extra
            feeding = asyncio.create_task(_feed(settings, end))
            watching = asyncio.create_task(_watch(settings, end))
            await asyncio.sleep(event_at - time.monotonic())
            if event == "restart":
                first.send_signal(signal.SIGTERM)
                await asyncio.to_thread(first.wait, 30)
                first = stages.start("processor", env, logs / f"rebalance-{name}-2.log")
            elif event == "join":
                extra = stages.start("processor-2", env, logs / f"rebalance-{name}-2.log")
            else:
                assert extra is not None
                extra.send_signal(signal.SIGTERM)
                await asyncio.to_thread(extra.wait, 30)
                extra = stages.start("processor-2", env, logs / f"rebalance-{name}-3.log")
            await feeding
            return await watching

        samples = asyncio.run(scenario())
        before = longest_gap(samples, event_at - BEFORE_S, event_at)
        after = longest_gap(samples, event_at, end)
        return before, after
    finally:
        for proc in (first, extra):
            if proc is not None:
                localinfra.stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebalance", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    logs = Path(".local") / "bench-rebalance"
    rows = []
    with infrastructure(logs) as infra:
        for event in EVENTS:
            before, after = measure(infra, event, logs)
            rows.append({"event": event, "gap_before_s": before, "gap_after_s": after})
            print(
                f"{event:18s} longest processing gap: {after:5.1f} s after the event "
                f"(steady state before it: {before:4.1f} s)  [{infra.broker}]",
                flush=True,
            )
        broker = infra.broker
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"rebalance-{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc = {"broker": broker, "patients": PATIENTS, "every_s": EVERY_S, "rows": rows}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

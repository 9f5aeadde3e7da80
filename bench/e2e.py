"""End-to-end scenario: POST → alert on vitals.alerts, p50/p99, at a fixed offered load.

The whole pipeline runs as `vitals` processes (gateway, processor, both sinks). The load
generator offers background uploads of normal readings on a schedule (open loop) while
this process injects desaturations at known times: each is one upload of 50 SpO2 readings
at 85 % spanning the last 147 s, so the sustained-breach rule (below 90 % for 120 s) opens
an episode on that very upload. Latency runs from the moment the injection's POST starts
to the moment its alert is read from vitals.alerts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson

from bench import data, procs
from bench.gateway import LoadSpec, accepted_per_s, run_load
from bench.infra import Infra
from bench.report import Row
from bench.stats import Summary, Target, percentile
from vitals import contract
from vitals.errors import InfrastructureError
from vitals.kafka import consumer, create_topics
from vitals.settings import LOCAL_GATEWAY_TOKEN, Settings
from vitalsctl import localinfra, stages


@dataclass(frozen=True, slots=True)
class Stages:
    """Where one injection's latency went, in ms (wall clock; one machine, one clock)."""

    total: float
    to_detected: float  # POST start -> the processor decided (gateway, Kafka, processor)
    to_published: float  # decided -> the alerts sink published (detections topic, sink)
    to_read: float  # published -> read from vitals.alerts by a subscriber


@dataclass(frozen=True, slots=True)
class E2ESpec:
    readings_per_s: float
    duration_s: float
    injections_per_s: float


def desaturation(index: int, now_ms: int) -> bytes:
    readings = [
        {
            "metric": "spo2",
            "t": datetime.fromtimestamp((now_ms - 147_000 + k * 3_000) / 1000, UTC).isoformat(),
            "v": 85,
            "unit": "%",
        }
        for k in range(50)
    ]
    return orjson.dumps(
        {"device_id": f"watch-inj-{index}", "patient_id": f"p-inj-{index}", "readings": readings}
    )


async def _inject(
    settings: Settings, url: str, spec: E2ESpec, first: int, count: int, wait_s: float
) -> tuple[list[Stages], int]:
    """Inject `count` desaturations; returns their latencies and how many never alerted."""
    alerts = consumer(settings, group_id=None, auto_offset_reset="latest")
    await alerts.start()
    sent: dict[str, float] = {}
    latencies: list[Stages] = []
    try:
        alerts.subscribe([settings.topic(contract.ALERTS)])
        while not alerts.assignment():
            await alerts.getmany(timeout_ms=100)
        await alerts.seek_to_end()

        async def read() -> None:
            while len(latencies) < count:
                batches = await alerts.getmany(timeout_ms=100)
                now = time.time()
                for record in (r for part in batches.values() for r in part):
                    doc = orjson.loads(record.value)
                    at = sent.pop(doc["patient_id"], None)
                    if at is not None and doc["state"] == "opened":
                        detected = datetime.fromisoformat(doc["detected_at"]).timestamp()
                        published = datetime.fromisoformat(doc["published_at"]).timestamp()
                        latencies.append(
                            Stages(
                                (now - at) * 1000,
                                (detected - at) * 1000,
                                (published - detected) * 1000,
                                (now - published) * 1000,
                            )
                        )

        reader = asyncio.create_task(read())
        headers = {
            "Authorization": f"Bearer {LOCAL_GATEWAY_TOKEN}",
            "Content-Type": "application/json",
        }
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            for i in range(first, first + count):
                body = desaturation(i, contract.now_ms())
                sent[f"p-inj-{i}"] = time.time()
                answer = await client.post("/v1/readings", content=body)
                if answer.status_code != 202:
                    raise InfrastructureError(f"injection refused: {answer.status_code}")
                await asyncio.sleep(1 / spec.injections_per_s)
        try:
            await asyncio.wait_for(reader, wait_s)
        except TimeoutError:
            pass
        return latencies, count - len(latencies)
    finally:
        await alerts.stop()


def run(infra: Infra, spec: E2ESpec, reps: int) -> list[Row]:
    port = localinfra.free_port()
    settings = infra.settings("e2e", gateway_port=port)
    asyncio.run(create_topics(settings))
    env = infra.env(settings)
    url = f"http://127.0.0.1:{port}"
    upload_rate = spec.readings_per_s / data.READINGS_PER_UPLOAD
    count = int(upload_rate * (spec.duration_s + 3))
    bodies = infra.logs / "e2e-bodies.json"
    uploads = data.fleet_uploads(count, 2_000, contract.now_ms())
    bodies.write_bytes(orjson.dumps([data.wire_body(u) for u in uploads]))
    started = {
        name: stages.start(name, env, infra.logs / f"e2e-{name}.log") for name in stages.PIPELINE
    }
    try:
        procs.wait_http(f"{url}/readyz", 30, started["gateway"])
        # One injection first: the pipeline is warm (groups joined) when the clock runs.
        warm, missing = asyncio.run(_inject(settings, url, spec, 0, 1, 60))
        if missing:
            raise InfrastructureError("e2e: the warm-up desaturation never alerted")
        p50s, p99s, gw_p99s, offered, lost = [], [], [], [], 0
        stage_p50s: dict[str, list[float]] = {"to_detected": [], "to_published": [], "to_read": []}
        injections = max(1, int(spec.injections_per_s * spec.duration_s))
        for rep in range(reps):
            load = LoadSpec(64, 1.0, spec.duration_s + 1, rate=upload_rate)

            async def both(
                first: int, load: LoadSpec = load
            ) -> tuple[dict[str, object], list[Stages], int]:
                loading = asyncio.create_task(asyncio.to_thread(run_load, [port], bodies, load))
                await asyncio.sleep(1.0)  # the load generator's warm-up
                lat, missed = await _inject(settings, url, spec, first, injections, 10)
                return await loading, lat, missed

            result, latencies, missed = asyncio.run(both(1 + rep * injections))
            for name, proc in started.items():
                if proc.poll() is not None:
                    raise InfrastructureError(f"e2e: {name} exited with {proc.returncode}")
            lost += missed
            if latencies:
                totals = [s.total for s in latencies]
                p50s.append(percentile(totals, 50))
                p99s.append(percentile(totals, 99))
                for name, values in stage_p50s.items():
                    values.append(percentile([getattr(s, name) for s in latencies], 50))
            gw_p99s.append(float(result["p99_ms"] or 0))
            offered.append(accepted_per_s(result) * data.READINGS_PER_UPLOAD)
    finally:
        for name in ("gateway", "processor", "sink-timescale", "sink-alerts"):
            procs.stop(started[name])
    if not p99s:
        raise InfrastructureError("e2e: no injected desaturation alerted")
    what = f"{injections} injections per run at {spec.readings_per_s:,.0f} readings/s offered" + (
        f"; {lost} injections never alerted" if lost else ""
    )
    return [
        Row(
            "end to end",
            "POST → alert p99",
            "ms",
            Summary(tuple(p99s)),
            target=Target("below", 500.0),
            note=what,
        ),
        Row("end to end", "POST → alert p50", "ms", Summary(tuple(p50s))),
        Row(
            "end to end",
            "p50 POST → detected",
            "ms",
            Summary(tuple(stage_p50s["to_detected"])),
            note="gateway, vitals.readings and the processor (its poll and batch)",
        ),
        Row(
            "end to end",
            "p50 detected → published",
            "ms",
            Summary(tuple(stage_p50s["to_published"])),
            note="vitals.detections and the alerts sink (its poll, database write, produce)",
        ),
        Row(
            "end to end",
            "p50 published → read",
            "ms",
            Summary(tuple(stage_p50s["to_read"])),
            note="vitals.alerts to a subscriber",
        ),
        Row("end to end", "gateway p99 under this load", "ms", Summary(tuple(gw_p99s))),
        Row(
            "end to end",
            "accepted readings/s (offered load)",
            "readings/s",
            Summary(tuple(offered)),
            note=f"target offered load {spec.readings_per_s:,.0f} readings/s (open loop)",
        ),
    ]

"""Backpressure: a slow database (a lock held on the readings table) under load.

The readings sink writes one batch at a time: while its transaction waits on the lock it
polls nothing new, so the backlog waits in Kafka (lag grows) and the sink's memory stays
within its fetch buffer and one batch. The gateway does not touch the database: it keeps
answering 202 because Kafka, not the gateway's memory, is the buffer. When the lock goes,
the sink catches up and every promise holds.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import orjson
import pytest

from tests.faults.checks import TopicReader, lag
from tests.faults.conftest import SCENARIOS
from tests.faults.load import Upload, _iso
from tests.faults.scenario import after, run
from tests.support.stages import Stages
from vitals import contract
from vitals.settings import LOCAL_GATEWAY_TOKEN, Settings

pytestmark = pytest.mark.faults

SCENARIOS += ["readings table locked 10 s"]

LOCKED_S = 10.0
BACKLOG_UPLOADS = 12  # uploads of 5,000 readings (the largest allowed) while locked
BACKLOG_READINGS = 5_000
# What the sink may hold: its fetch buffer (3 partitions × 8 MiB) and one decoded batch.
# Measured growth is ~20 MB; an unbounded queue of the ~60,000 backlog readings as rows
# would be several times that.
SINK_GROWTH_BOUND_MB = 120.0


def _backlog(prefix: str, i: int, start_ms: int) -> Upload:
    patient = f"{prefix}bulk{i:02d}"
    readings, valid = [], []
    for j in range(BACKLOG_READINGS):
        t = start_ms + j * 1_000
        readings.append({"metric": "heart_rate", "t": _iso(t), "v": 70 + j % 20, "unit": "/min"})
        valid.append(("heart_rate", t))
    body = {"device_id": f"watch-{patient}", "patient_id": patient, "readings": readings}
    return Upload(patient, 0, orjson.dumps(body), valid, [])


async def test_slow_database_bounds_memory_and_recovers(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    samples: dict[str, list[float]] = {"sink-timescale": [], "gateway": []}
    lag_while_locked: list[int] = []
    prefix = "p-lock-" + str(int(time.time()))[-6:] + "-"
    extra: list[Upload] = []

    async def sample() -> None:
        while True:
            for name in samples:
                samples[name].append(pipeline.rss_mb(name))
            await asyncio.sleep(0.5)

    async def inject() -> float:
        await after(2)
        conn = await asyncpg.connect(fault_settings.database_url)
        sampler = asyncio.create_task(sample())
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
                start_ms = contract.now_ms() - 2 * 3600_000
                async with httpx.AsyncClient(timeout=30) as client:
                    for i in range(BACKLOG_UPLOADS):  # a gateway's backlog after hours offline
                        upload = _backlog(prefix, i, start_ms)
                        answer = await client.post(
                            f"{pipeline.gateway_url}/v1/readings",
                            content=upload.body,
                            headers={
                                "Authorization": f"Bearer {LOCAL_GATEWAY_TOKEN}",
                                "Content-Type": "application/json",
                            },
                        )
                        upload.attempts.append(answer.status_code)
                        extra.append(upload)
                await after(max(0.0, LOCKED_S - 2))
                lag_while_locked.append((await lag(fault_settings))[fault_settings.sink_group])
        finally:
            await conn.close()
            await asyncio.sleep(2)  # sample the catch-up too
            sampler.cancel()
        return time.monotonic()

    verdict, _ = await run(
        "readings table locked 10 s",
        f"LOCK TABLE readings (ACCESS EXCLUSIVE) at 2 s for {LOCKED_S:g} s, while "
        f"{BACKLOG_UPLOADS} backlog uploads of {BACKLOG_READINGS} readings arrive",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        prefix=prefix,
        extra_uploads=extra,
    )
    growth = {n: max(v) - v[0] for n, v in samples.items() if v}
    verdict.injection += (
        f"; RSS growth sink {growth['sink-timescale']:.0f} MB, gateway {growth['gateway']:.0f} MB"
        f"; sink lag while locked {lag_while_locked[0]} messages"
    )
    if [u.attempts for u in extra] != [[202]] * BACKLOG_UPLOADS:
        verdict.problems.append("the gateway refused backlog uploads: Kafka is the buffer")
    if not lag_while_locked[0] > 0:
        verdict.problems.append("the lock did not hold the sink back (is it the same table?)")
    if growth["sink-timescale"] >= SINK_GROWTH_BOUND_MB:
        verdict.problems.append(f"sink memory grew {growth['sink-timescale']:.0f} MB")
    assert not verdict.problems, verdict.problems

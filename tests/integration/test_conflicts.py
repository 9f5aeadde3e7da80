"""One value per reading, end to end: gateway, broker, sink and processor in this process,
PostgreSQL real. The first value of a (patient, metric, time, device) is the reading of
record; a later other value is kept in reading_conflicts and never drives a detection
(docs/wire-format.md, "One value per reading")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.support.gateway import JSON, limits, running
from tests.support.inprocess import (
    all_committed,
    processor,
    sink_committed,
    take_first_generation,
    timescale_sink,
)
from tests.support.metrics import sample
from tests.support.topics import TopicReader, detections
from vitals import contract
from vitals.settings import Settings

pytestmark = pytest.mark.integration

STEP_MS = 10_000  # one sample every 10 s, as in test_processor.py

DEVICE = "oxi-1"
NORMAL, LOW = [97.0] * 14, [85.0] * 14  # 14 readings 10 s apart: 130 s below 90 % opens


@pytest.fixture
async def own(settings: Settings) -> Settings:
    own = settings.model_copy(
        update={
            "processor_group": f"proc-{uuid.uuid4().hex[:8]}",
            "sink_group": f"sink-{uuid.uuid4().hex[:8]}",
        }
    )
    await take_first_generation(own)
    return own


def body(patient: str, start: int, values: Sequence[float]) -> bytes:
    readings = [
        {"metric": "spo2", "t": contract.iso(start + i * STEP_MS), "v": v, "unit": "%"}
        for i, v in enumerate(values)
    ]
    return orjson.dumps({"device_id": DEVICE, "patient_id": patient, "readings": readings})


async def post(gateway: httpx.AsyncClient, raw: bytes) -> dict[str, Any]:
    response = await gateway.post("/v1/readings", content=raw, headers=JSON)
    assert response.status_code == 202, response.text
    return response.json()


async def fetch(url: str, sql: str, patient: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql, patient)]
    finally:
        await conn.close()


STORED = "SELECT value, upload_id::text FROM readings WHERE patient_id = $1 ORDER BY t"
CONFLICTS = (
    "SELECT stored_value, conflicting_value, upload_id::text FROM reading_conflicts"
    " WHERE patient_id = $1 ORDER BY t"
)


async def test_a_conflicting_second_upload_keeps_the_first_value_everywhere(
    own: Settings,
) -> None:
    start = contract.now_ms() - 20 * 60_000
    calm, desat, repeat = (f"p-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("calm", "desat", "rep"))
    conflicts_before = sample("vitals_sink_reading_conflicts_total", metric="spo2")
    duplicates_before = sample("vitals_sink_rows_total", result="duplicate")

    async with (
        running(limits(own)) as gateway,
        timescale_sink(own),
        processor(own),
        TopicReader(own, contract.DETECTIONS) as reader,
    ):
        # Normal first, then a desaturation at the same keys: both answered 202.
        calm_first = await post(gateway, body(calm, start, NORMAL))
        calm_second = await post(gateway, body(calm, start, LOW))
        # The reverse: a desaturation first, then normal values at the same keys.
        desat_first = await post(gateway, body(desat, start, LOW))
        desat_second = await post(gateway, body(desat, start, NORMAL))
        # An exact retry (no Idempotency-Key: a new upload id) is a silent duplicate.
        await post(gateway, body(repeat, start, NORMAL))
        await post(gateway, body(repeat, start, NORMAL))
        await all_committed(own)
        await sink_committed(own)
        found = detections(await reader.to_end())

    for answer in (calm_first, calm_second, desat_first, desat_second):
        assert (answer["accepted"], answer["rejected"]) == (14, [])
    # The database holds the first values, with the first upload's id...
    assert await fetch(own.database_url, STORED, calm) == [(97.0, calm_first["upload_id"])] * 14
    assert await fetch(own.database_url, STORED, desat) == [(85.0, desat_first["upload_id"])] * 14
    # ...and the second values beside them, with the id of the upload that carried them.
    assert (
        await fetch(own.database_url, CONFLICTS, calm)
        == [(97.0, 85.0, calm_second["upload_id"])] * 14
    )
    assert (
        await fetch(own.database_url, CONFLICTS, desat)
        == [(85.0, 97.0, desat_second["upload_id"])] * 14
    )
    assert await fetch(own.database_url, CONFLICTS, repeat) == []
    assert sample("vitals_sink_reading_conflicts_total", metric="spo2") - conflicts_before == 28
    assert sample("vitals_sink_rows_total", result="duplicate") - duplicates_before == 14
    # The processor follows the stored values: no alert for the normal readings of record,
    # and the desaturation of record opens (the later normal values do not resolve it).
    assert [(d.patient_id, d.rule, d.state) for d in found] == [(desat, "spo2_low", "opened")]
    assert found[0].value == 85.0


async def test_a_conflict_within_one_upload_is_rejected_at_the_door_and_never_stored(
    own: Settings,
) -> None:
    start = contract.now_ms() - 20 * 60_000
    patient = f"p-within-{uuid.uuid4().hex[:6]}"
    doc = orjson.loads(body(patient, start, [97.0, 96.0]))
    doc["readings"].append({**doc["readings"][0], "v": 85.0})  # item 0's key, another value
    doc["readings"].append(doc["readings"][1])  # item 1 again, same value

    async with running(limits(own)) as gateway, timescale_sink(own):
        answer = await post(gateway, orjson.dumps(doc))
        await sink_committed(own)

    assert answer["accepted"] == 3
    [rejection] = answer["rejected"]
    assert (rejection["index"], rejection["code"]) == (2, "conflicting_value")
    assert "item 0" in rejection["detail"]
    assert [v for v, _ in await fetch(own.database_url, STORED, patient)] == [97.0, 96.0]
    assert await fetch(own.database_url, CONFLICTS, patient) == []

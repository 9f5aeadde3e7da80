"""End to end on real parts: HTTP -> gateway -> Kafka -> processor -> sinks -> PostgreSQL
and the public alert topic, each stage its own process."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from tests.e2e.conftest import AlertReader, Pipeline, post
from vitals.contract import now_ms
from vitalsctl import stages

pytestmark = pytest.mark.e2e

EVERY_MS = 5_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _minute(start: int, minute: int, spo2: float) -> list[dict]:
    """One minute of a watch's readings (heart rate and SpO2 every 5 s)."""
    out = []
    for i in range(60_000 // EVERY_MS):
        t = _iso(start + minute * 60_000 + i * EVERY_MS)
        out.append({"metric": "heart_rate", "t": t, "v": 72, "unit": "/min"})
        out.append({"metric": "spo2", "t": t, "v": spo2, "unit": "%"})
    return out


def _upload(patient: str, readings: list[dict]) -> dict:
    return {"device_id": f"watch-{patient}", "patient_id": patient, "readings": readings}


def _logs_name_no_patient(pipeline: Pipeline, patient: str) -> None:
    """Every stage logged (JSON lines), and none of them named the patient or the device
    (its id contains the patient's)."""
    for name in stages.PIPELINE:
        text = (pipeline.logs / f"{name}.log").read_text()
        lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines, f"{name} wrote no JSON log lines"
        assert patient not in text, f"{name}'s log names the patient"


def _of(alerts: list[dict], patient: str, state: str | None = None) -> list[dict]:
    """The patient's spo2_low alerts (a desaturation also raises NEWS2, checked apart)."""
    return [
        a
        for a in alerts
        if a["patient_id"] == patient and a["rule"] == "spo2_low" and state in (None, a["state"])
    ]


def _no_duplicates(alerts: list[dict], patient: str) -> None:
    keys = [(a["alert_id"], a["state"]) for a in alerts if a["patient_id"] == patient]
    assert len(keys) == len(set(keys)), keys


async def _stored(database_url: str, patient: str, expected: int, within_s: float = 60) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + within_s
        while True:
            count = await conn.fetchval(
                "SELECT count(*) FROM readings WHERE patient_id = $1", patient
            )
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _scores(database_url: str, patient: str, expected: int, within_s: float = 60) -> list:
    """The patient's stored NEWS2 score changes as (t ms, total, band), once `expected` are in."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + within_s
        while True:
            rows = await conn.fetch(
                "SELECT t, news2, band FROM news2_scores WHERE patient_id = $1 ORDER BY t", patient
            )
            if len(rows) >= expected or time.monotonic() > deadline:
                return [(round(r["t"].timestamp() * 1000), r["news2"], r["band"]) for r in rows]
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def test_desaturation_alerted_once_and_every_reading_stored_once(
    pipeline: Pipeline, alerts: AlertReader
) -> None:
    patient = f"p-e2e-{uuid.uuid4().hex[:6]}"
    start = now_ms() - 12 * 60_000
    spo2 = [97, 97, 85, 85, 85, 97, 97, 97, 97, 97]  # a 3-minute desaturation
    uploads = [_upload(patient, _minute(start, m, s)) for m, s in enumerate(spo2)]
    uploads[0]["readings"].append(  # impossible: rejected at the door, never stored
        {"metric": "spo2", "t": _iso(start), "v": 150, "unit": "%"}
    )

    answers = [post(pipeline, u) for u in uploads]
    assert [a.status_code for a in answers] == [202] * len(uploads)
    assert answers[0].json()["rejected"][0]["index"] == len(uploads[0]["readings"]) - 1
    # A gateway retrying after a timeout: once without a key, once with the same key.
    assert post(pipeline, uploads[3]).status_code == 202
    keyed = [post(pipeline, uploads[4], **{"Idempotency-Key": "retry-4"}) for _ in range(2)]
    assert keyed[0].json()["upload_id"] == keyed[1].json()["upload_id"]

    seen = await alerts.until(lambda s: len(_of(s, patient, "resolved")) >= 1)
    seen = await alerts.settle()
    mine = _of(seen, patient)
    assert sorted(a["state"] for a in mine) == ["opened", "resolved"]
    _no_duplicates(seen, patient)
    assert len({a["alert_id"] for a in mine}) == 1
    assert mine[0]["episode_start"].startswith(_iso(start + 2 * 60_000)[:19])

    expected = 10 * 24  # every valid reading, once, despite the duplicate POSTs
    assert await _stored(pipeline.settings.database_url, patient, expected) == expected
    # NEWS2 (heart rate 72 -> 0; SpO2 97 -> 0, 85 -> 3): its changes only, stored by the sink.
    assert await _scores(pipeline.settings.database_url, patient, 3) == [
        (start, 0, "zero"),
        (start + 2 * 60_000, 3, "low-medium"),
        (start + 5 * 60_000, 0, "zero"),
    ]
    conn = await asyncpg.connect(pipeline.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT rule, state FROM alerts WHERE patient_id = $1 AND rule = 'spo2_low'", patient
        )
    finally:
        await conn.close()
    assert sorted((r["rule"], r["state"]) for r in rows) == [
        ("spo2_low", "opened"),
        ("spo2_low", "resolved"),
    ]
    pipeline.assert_running()
    _logs_name_no_patient(pipeline, patient)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_processor_restart_mid_episode_neither_loses_nor_repeats_it(
    pipeline: Pipeline, alerts: AlertReader, sig: int
) -> None:
    patient = f"p-restart-{uuid.uuid4().hex[:6]}"
    start = now_ms() - 12 * 60_000
    for minute, spo2 in enumerate([97, 85, 85, 85, 85]):
        assert post(pipeline, _upload(patient, _minute(start, minute, spo2))).status_code == 202
    await alerts.until(lambda s: len(_of(s, patient, "opened")) == 1)

    code = pipeline.stop("processor", sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    pipeline.start("processor")
    for minute in range(5, 9):  # the episode goes on, then resolves
        spo2 = 85 if minute == 5 else 97
        assert post(pipeline, _upload(patient, _minute(start, minute, spo2))).status_code == 202

    await alerts.until(lambda s: len(_of(s, patient, "resolved")) >= 1, within_s=90)
    seen = await alerts.settle()
    mine = _of(seen, patient)
    assert sorted(a["state"] for a in mine) == ["opened", "resolved"]
    assert len({a["alert_id"] for a in mine}) == 1
    _no_duplicates(seen, patient)
    pipeline.assert_running()

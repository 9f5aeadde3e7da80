"""The data every scenario uses: a fleet's uploads of 50 readings (heart rate and SpO2 at
1 s, values in the normal range so nothing alerts unless a scenario injects it), as gateway
request bodies, vitals.readings messages or rows of the readings table, timed to end now
(inside the processor's horizon, so a fresh consumer group does not skip them as history)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from sinks.timescale.rows import Row, rows_of
from vitals import contract

READINGS_PER_UPLOAD = 50
STEP_MS = 1_000


def _values(rng: random.Random, n: int) -> list[tuple[str, float, str]]:
    out: list[tuple[str, float, str]] = []
    for i in range(n):
        if i % 2 == 0:
            out.append(("heart_rate", round(rng.uniform(60, 90)), "/min"))
        else:
            out.append(("spo2", round(rng.uniform(95, 99)), "%"))
    return out


def fleet_uploads(
    count: int, patients: int, end_ms: int, *, seed: int = 7, per_upload: int = READINGS_PER_UPLOAD
) -> list[contract.Upload]:
    """`count` uploads spread over `patients`; each patient's uploads are consecutive in
    event time, the last ending at `end_ms`."""
    return list(iter_uploads(count, patients, end_ms, seed=seed, per_upload=per_upload))


def fleet_rows(count: int, patients: int, end_ms: int, *, batch: int) -> Iterator[list[Row]]:
    """The same fleet's readings (`count` rounded down to whole uploads) as rows of the
    readings table, `batch` rows at a time: millions of rows need the memory of one batch."""
    rows: list[Row] = []
    for upload in iter_uploads(count // READINGS_PER_UPLOAD, patients, end_ms):
        rows += rows_of(upload)
        if len(rows) >= batch:
            yield rows[:batch]
            rows = rows[batch:]
    if rows:
        yield rows


def iter_uploads(
    count: int, patients: int, end_ms: int, *, seed: int = 7, per_upload: int = READINGS_PER_UPLOAD
) -> Iterator[contract.Upload]:
    """fleet_uploads, one upload at a time."""
    rng = random.Random(seed)
    per_patient = -(-count // patients)
    span = per_upload // 2 * STEP_MS  # two metrics per timestamp
    start = end_ms - per_patient * span
    for i in range(count):
        patient, k = i % patients, i // patients
        t0 = start + k * span
        readings = tuple(
            contract.Reading(metric, t0 + (j // 2) * STEP_MS, v, unit)
            for j, (metric, v, unit) in enumerate(_values(rng, per_upload))
        )
        yield contract.Upload(
            upload_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            gateway_id="gw-bench",
            device_id=f"watch-{patient:05d}",
            patient_id=f"p-{patient:05d}",
            received=end_ms,
            readings=readings,
        )


def wire_body(upload: contract.Upload) -> str:
    """The gateway request body (docs/wire-format.md) for an upload."""
    return orjson.dumps(
        {
            "device_id": upload.device_id,
            "patient_id": upload.patient_id,
            "readings": [
                {"metric": r.metric, "t": _iso(r.t), "v": r.v, "unit": r.unit}
                for r in upload.readings
            ],
        }
    ).decode()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def produce(producer: AIOKafkaProducer, topic: str, uploads: list[contract.Upload]) -> None:
    """Put uploads on a topic as the gateway would (key: patient), acknowledged."""
    pending = []
    for upload in uploads:
        pending.append(
            await producer.send(
                topic,
                contract.encode_upload(upload),
                key=upload.patient_id.encode(),
                timestamp_ms=upload.received,
            )
        )
        if len(pending) >= 500:
            for fut in pending:
                await fut
            pending.clear()
    for fut in pending:
        await fut

"""Uploads sent straight to the readings topic, as the gateway would: SpO2 series and a
desaturation episode, one sample every STEP_MS."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from vitals import contract, kafka
from vitals.contract import Reading, Upload
from vitals.settings import Settings

STEP_MS = 10_000


def spo2(
    patient: str,
    start: int,
    values: Sequence[float],
    *,
    device: str = "oxi-1",
    received: int | None = None,
) -> Upload:
    """One upload of SpO2 readings every 10 s from `start` (ms)."""
    readings = tuple(Reading("spo2", start + i * STEP_MS, v, "%") for i, v in enumerate(values))
    return Upload(
        str(uuid.uuid4()),
        "gw-test",
        device,
        patient,
        received if received is not None else contract.now_ms(),
        readings,
    )


async def produce(
    settings: Settings, messages: Sequence[tuple[bytes, bytes]], timestamp_ms: int | None = None
) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(
                settings.topic(contract.READINGS), value, key=key, timestamp_ms=timestamp_ms
            )
    finally:
        await producer.stop()


async def send(settings: Settings, *uploads: Upload, timestamp_ms: int | None = None) -> None:
    await produce(
        settings,
        [(u.patient_id.encode(), contract.encode_upload(u)) for u in uploads],
        timestamp_ms,
    )


def episode(patient: str, start: int, received: int | None = None) -> list[Upload]:
    """A desaturation as three uploads: onset, 130 s below 90 % (opens), 70 s at 95 %."""
    low = [86, 85, 84, 85, 86, 85, 87, 86, 85, 84, 85, 86, 85, 86]
    return [
        spo2(patient, start, [96, 95, 95], received=received),
        spo2(patient, start + 3 * STEP_MS, low, received=received),
        spo2(patient, start + 17 * STEP_MS, [95, 95, 96, 95, 95, 96, 95, 96], received=received),
    ]

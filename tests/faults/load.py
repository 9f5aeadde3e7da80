"""A steady simulated load with a ledger of every answer.

Each patient is one simulated wearable gateway: one upload per event-minute (heart rate
and SpO2 every 5 s), posted at a steady pace, retried until answered 202 (as a real
gateway does) within a deadline. Some patients carry an injected desaturation, whose
alerts the checks expect. The ledger records each attempt's outcome:

- `accepted`: some attempt was answered 202: every valid reading must be stored once;
- `unknown`: no attempt was answered 202 but some failed without a definite answer (503,
  a timeout, a dropped connection): the upload may or may not have landed, so its
  readings are checked as stored *at most* once;
- `refused`: answered with a definite 4xx, or never connected: nothing of it may be stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson

from vitals import contract
from vitals.settings import LOCAL_GATEWAY_TOKEN

EVERY_MS = 5_000
MINUTES = 8  # event-minutes per patient: a desaturation opens (minute 4) and resolves (7)
LOW_MINUTES = range(2, 6)  # SpO2 85 % for 4 minutes: above the 2-minute rule, then back
DESATURATED = 85.0
NORMAL = 97.0

# An answer we never got: the request may or may not have reached Kafka.
NO_ANSWER = 0
# No connection at all: the request never reached a gateway, so it is certainly not stored.
NOT_CONNECTED = -1


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass
class Upload:
    patient: str
    minute: int
    body: bytes
    valid: list[tuple[str, int]]  # (metric, t ms) of the readings the gateway should accept
    invalid: list[tuple[str, int]]  # readings the gateway must reject
    attempts: list[int] = field(default_factory=list)  # status per attempt, NO_ANSWER = 0
    answered_after_s: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each attempt

    @property
    def device(self) -> str:
        return f"watch-{self.patient}"

    @property
    def outcome(self) -> str:
        if 202 in self.attempts:
            return "accepted"
        if any(s == NO_ANSWER or s >= 500 for s in self.attempts):
            return "unknown"
        return "refused"


@dataclass
class Ledger:
    prefix: str  # every patient of one scenario starts with it
    uploads: list[Upload] = field(default_factory=list)
    desaturated: dict[str, int] = field(default_factory=dict)  # patient -> episode start ms

    def count(self, outcome: str) -> int:
        return sum(1 for u in self.uploads if u.outcome == outcome)

    def readings(self, outcome: str) -> set[tuple[str, str, int]]:
        """(patient, metric, t) of the valid readings of uploads with this outcome."""
        return {
            (u.patient, metric, t)
            for u in self.uploads
            if u.outcome == outcome
            for metric, t in u.valid
        }

    def rejected_items(self) -> set[tuple[str, str, int]]:
        return {(u.patient, m, t) for u in self.uploads for m, t in u.invalid}

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for u in self.uploads:
            for s in u.attempts:
                out[s] = out.get(s, 0) + 1
        return out

    def expected_alerts(self) -> set[tuple[str, str]]:
        """(alert_id, state) for every injected desaturation: opened, then resolved."""
        return {
            (contract.alert_id(p, "spo2_low", start), state)
            for p, start in self.desaturated.items()
            for state in contract.STATES
        }


def minute_upload(patient: str, start_ms: int, minute: int, low: bool, impossible: bool) -> Upload:
    readings: list[dict] = []
    valid: list[tuple[str, int]] = []
    for i in range(60_000 // EVERY_MS):
        t = start_ms + minute * 60_000 + i * EVERY_MS
        spo2 = DESATURATED if low and minute in LOW_MINUTES else NORMAL
        # A little variation, as real sensors show: a value exactly constant for 10 minutes
        # (heart rate) or 30 (SpO2) is a flat-line sensor fault, which the soak's hours of
        # event time would otherwise raise for every patient.
        wobble = (i + minute) % 3 - 1
        heart_rate = 72 + wobble
        readings.append({"metric": "heart_rate", "t": _iso(t), "v": heart_rate, "unit": "/min"})
        readings.append({"metric": "spo2", "t": _iso(t), "v": spo2 + wobble, "unit": "%"})
        valid += [("heart_rate", t), ("spo2", t)]
    invalid: list[tuple[str, int]] = []
    if impossible:  # rejected item by item at the door, the rest accepted
        t = start_ms + minute * 60_000 + 2_500
        readings.append({"metric": "spo2", "t": _iso(t), "v": 150, "unit": "%"})
        invalid.append(("spo2", t))
    body = {"device_id": f"watch-{patient}", "patient_id": patient, "readings": readings}
    return Upload(patient, minute, orjson.dumps(body), valid, invalid)


@dataclass
class LoadPlan:
    patients: int = 8
    interval_s: float = 0.8  # between one patient's uploads
    minutes: int = MINUTES
    retry_deadline_s: float = 60.0  # a gateway gives up on one upload after this
    request_timeout_s: float = 5.0
    duplicate_every_upload: bool = False  # resend each upload once more after its answer
    keep_alive: bool = True
    # Patients without an injected event whose gateway gives up after one failed attempt:
    # their 503s and dropped answers stay "unknown" in the ledger (checked at most once).
    odd_patients_give_up: bool = False


class LoadGenerator:
    """Posts the plan through the gateway and fills the ledger."""

    def __init__(self, gateway_url: str, plan: LoadPlan, prefix: str | None = None) -> None:
        self.url = f"{gateway_url}/v1/readings"
        self.plan = plan
        self.ledger = Ledger(prefix or f"p-{uuid.uuid4().hex[:6]}-")
        self.started = 0.0

    async def run(self) -> Ledger:
        plan = self.plan
        start_ms = contract.now_ms() - (plan.minutes + 5) * 60_000
        limits = httpx.Limits(max_keepalive_connections=None if plan.keep_alive else 0)
        headers = {
            "Authorization": f"Bearer {LOCAL_GATEWAY_TOKEN}",
            "Content-Type": "application/json",
        }
        self.started = time.monotonic()
        async with httpx.AsyncClient(
            timeout=plan.request_timeout_s, limits=limits, headers=headers
        ) as client:
            await asyncio.gather(
                self._refused_upload(client, start_ms),
                *(self._patient(client, i, start_ms) for i in range(plan.patients)),
            )
        return self.ledger

    async def _patient(self, client: httpx.AsyncClient, index: int, start_ms: int) -> None:
        patient = f"{self.ledger.prefix}{index:03d}"
        low = index % 2 == 0
        if low:
            self.ledger.desaturated[patient] = start_ms + LOW_MINUTES[0] * 60_000
        # Spread the patients over the interval so the load is steady, not in bursts.
        await asyncio.sleep(self.plan.interval_s * index / self.plan.patients)
        for minute in range(self.plan.minutes):
            upload = minute_upload(patient, start_ms, minute, low, impossible=minute == 0)
            self.ledger.uploads.append(upload)
            paced = time.monotonic() + self.plan.interval_s
            gives_up = self.plan.odd_patients_give_up and not low
            if gives_up:
                await self._post(client, upload, {})
            else:
                await self._until_accepted(client, upload)
            if self.plan.duplicate_every_upload:
                # The gateway's answer "timed out": the same body again, with and without
                # an Idempotency-Key in turn. Stored once either way.
                key = {"Idempotency-Key": f"{patient}-{minute}"} if minute % 2 else {}
                await self._post(client, upload, key)
            upload.body = b""  # answered: the ledger keeps the keys, not the bytes (soak)
            await asyncio.sleep(max(0.0, paced - time.monotonic()))

    async def _until_accepted(self, client: httpx.AsyncClient, upload: Upload) -> None:
        deadline = time.monotonic() + self.plan.retry_deadline_s
        key = {"Idempotency-Key": f"{upload.patient}-{upload.minute}"} if upload.minute % 2 else {}
        while time.monotonic() < deadline:
            status = await self._post(client, upload, key)
            if status == 202 or 400 <= status < 500:
                return
            await asyncio.sleep(0.5)

    async def _post(self, client: httpx.AsyncClient, upload: Upload, headers: dict) -> int:
        sent = time.monotonic()
        try:
            answer = await client.post(self.url, content=upload.body, headers=headers)
            status = answer.status_code
        except httpx.ConnectError:
            status = NOT_CONNECTED
        except httpx.HTTPError:
            status = NO_ANSWER
        upload.attempts.append(status)
        upload.answered_after_s.append(time.monotonic() - sent)
        upload.sent_at.append(sent)
        return status

    async def _refused_upload(self, client: httpx.AsyncClient, start_ms: int) -> None:
        """One upload with nothing valid: a definite 422, never stored."""
        patient = f"{self.ledger.prefix}bad"
        t = start_ms
        body = {
            "device_id": f"watch-{patient}",
            "patient_id": patient,
            "readings": [{"metric": "spo2", "t": _iso(t), "v": 150, "unit": "%"}],
        }
        upload = Upload(patient, 0, orjson.dumps(body), [], [("spo2", t)])
        self.ledger.uploads.append(upload)
        await self._until_accepted(client, upload)

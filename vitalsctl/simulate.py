"""A simulated fleet of wearables posting through the real gateway over HTTP.

The patients and their injected events are the seeded model of evaluation/physiology.py;
a gateway can come back after hours offline and upload its whole backlog first. This
module does the HTTP.

With an admin key (`--admin-key-file`) the simulator first registers its fleet through the
gateway's admin API, each watch bound to its patient and to the simulator's gateway, so it
works against a gateway that enforces the device registry, as deployments run it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import uuid
from dataclasses import dataclass

import httpx
import orjson

from evaluation.physiology import Event, Patient, default_events, iso
from vitals.contract import now_ms
from vitals.errors import ConfigError, InfrastructureError
from vitals.lifecycle import stop_on_signals
from vitals.settings import LOCAL_GATEWAY_ID, LOCAL_GATEWAY_TOKEN, Settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="gateway base URL (default: from settings)")
    parser.add_argument("--token", default=LOCAL_GATEWAY_TOKEN, help="gateway bearer token")
    parser.add_argument(
        "--gateway-id", default=LOCAL_GATEWAY_ID, help="the gateway id the token belongs to"
    )
    parser.add_argument(
        "--admin-key-file",
        help="an admin key in this file: register the fleet through the admin API first",
    )
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument(
        "--every", type=float, default=5.0, help="seconds between a watch's samples"
    )
    parser.add_argument(
        "--upload-every", type=float, default=5.0, help="seconds between a gateway's uploads"
    )
    parser.add_argument(
        "--backlog-minutes",
        type=float,
        default=10.0,
        help="each gateway first uploads this much history (offline, then back)",
    )
    parser.add_argument(
        "--offline-hours",
        type=float,
        default=0.0,
        help="one gateway (patient 4) comes back after this long offline",
    )
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until stopped")
    parser.add_argument("--no-events", action="store_true", help="no injected events")
    parser.add_argument(
        "--glitch-rate",
        type=float,
        default=0.002,
        help="share of samples carrying an impossible value (rejected)",
    )
    parser.add_argument("--seed", type=int, default=7)


@dataclass
class Tally:
    uploads: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0


async def run(settings: Settings, args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    url = (args.url or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/")
    start = now_ms()
    patients = [Patient(i, args.seed, glitch_rate=args.glitch_rate) for i in range(args.patients)]
    events = [] if args.no_events else default_events(start, args.patients)
    for event in events:
        log.info(
            "event scheduled",
            extra={
                "kind": event.kind,
                "patient_index": event.patient,
                "in_s": round((event.start - start) / 1000),
            },
        )
    tally = Tally()
    every_ms = int(args.every * 1000)
    backlog_ms = int(args.backlog_minutes * 60_000)
    cursors = {p.index: start - backlog_ms for p in patients}
    if args.offline_hours > 0 and args.patients > 4:
        cursors[4] = start - int(args.offline_hours * 3_600_000)
    if args.admin_key_file:
        # Bound from before the oldest backlog reading, or the backlog is `outside_binding`.
        since = min(cursors.values(), default=start) - 60_000
        await register_fleet(url, _read_key(args.admin_key_file), args.gateway_id, patients, since)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=10.0,
        limits=httpx.Limits(max_connections=32),
    ) as client:
        deadline = start + int(args.duration * 1000) if args.duration else None
        while not stop.is_set() and (deadline is None or now_ms() < deadline):
            now = now_ms()
            await asyncio.gather(
                *(
                    _upload_range(client, p, cursors[p.index], now, every_ms, events, tally, stop)
                    for p in patients
                )
            )
            cursors = dict.fromkeys(cursors, now)
            log.info("simulator", extra=tally.__dict__)
            try:
                await asyncio.wait_for(stop.wait(), args.upload_every)
            except TimeoutError:
                pass
    return 0


async def _upload_range(
    client: httpx.AsyncClient,
    patient: Patient,
    start: int,
    end: int,
    every_ms: int,
    events: list[Event],
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    readings = patient.readings(start, end, every_ms, events)  # empty while silent
    # A backlog goes up in uploads of at most 500 readings, as a real gateway would page it.
    for i in range(0, len(readings), 500):
        body = orjson.dumps(
            {
                "device_id": patient.device_id,
                "patient_id": patient.patient_id,
                "readings": readings[i : i + 500],
            }
        )
        await _post_with_retry(client, body, tally, stop)


async def _post_with_retry(
    client: httpx.AsyncClient, body: bytes, tally: Tally, stop: asyncio.Event
) -> None:
    """POST one upload; on timeout or 503 retry with the same Idempotency-Key."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(6):
        try:
            response = await client.post("/v1/readings", content=body, headers=headers)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code < 500 and response.status_code != 429:
            tally.uploads += 1
            if response.status_code == 202:
                doc = response.json()
                tally.accepted += doc["accepted"]
                tally.rejected += len(doc["rejected"])
            else:
                tally.failed += 1
            return
        if stop.is_set():
            break
        retry_after = float(response.headers.get("Retry-After", 1)) if response else 1.0
        await asyncio.sleep(min(retry_after, 2**attempt))
    tally.failed += 1


READY_WAIT_S = 60.0


async def register_fleet(
    url: str, admin_key: str, gateway_id: str, patients: list[Patient], since_ms: int
) -> None:
    """Each patient's watch registered to the patient and bound to `gateway_id`, through the
    admin API. Idempotent: a watch registered by an earlier run is bound to the gateway."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0) as client:
        await _wait_until_ready(client)
        for patient in patients:
            registration = {
                "device_id": patient.device_id,
                "patient_id": patient.patient_id,
                "gateways": [gateway_id],
                "since": iso(since_ms),
            }
            answer = await client.post("/v1/admin/devices", json=registration)
            if answer.status_code == 409 and answer.json().get("code") == "device_exists":
                answer = await client.put(
                    f"/v1/admin/devices/{patient.device_id}/gateways/{gateway_id}"
                )
            if answer.status_code != 204:
                raise ConfigError(
                    f"registering the simulated fleet failed: {answer.status_code} {answer.text}"
                )
    log.info("fleet registered", extra={"devices": len(patients)})


async def _wait_until_ready(client: httpx.AsyncClient) -> None:
    """The gateway answers /readyz once its registry (and so the admin key) is loaded."""
    deadline = asyncio.get_running_loop().time() + READY_WAIT_S
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise InfrastructureError(f"the gateway was not ready within {READY_WAIT_S:.0f} s")
        await asyncio.sleep(0.5)


def _read_key(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"admin key file: {exc}") from exc

"""The read API in this process for integration tests, and rows stored as the sinks store them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from processors.engine import Engine
from processors.rules import rules_from_settings
from readapi.server import build_server
from sinks.alerts import store
from sinks.timescale.rows import Row
from sinks.timescale.scores import score_row, upsert_scores
from sinks.timescale.writer import copy_then_upsert
from tests.support.polling import until
from vitals import contract
from vitals.catalog import METRICS
from vitals.settings import LOCAL_READER_TOKEN, Settings

AUTH = {"Authorization": f"Bearer {LOCAL_READER_TOKEN}"}


CURSOR_KEY = "cursor-key-of-the-read-api-tests-0123456789"


T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


S, M, H, D = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


UPLOAD = uuid.uuid4()


def row(patient: str, metric: str, t: datetime, v: float, device: str = "w1") -> Row:
    return (patient, metric, t, device, v, METRICS[metric].unit, UPLOAD, t + M)


async def store_rows(database_url: str, rows: Sequence[Row]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await copy_then_upsert(conn, rows)
    finally:
        await conn.close()


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    server = build_server(settings)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


async def store_alerts(database_url: str, p: str, starts: Sequence[datetime]) -> None:
    """An episode per start: opened then, resolved ten minutes later."""
    detections = []
    for start in starts:
        ms = contract.now_ms() if start is None else int(start.timestamp() * 1000)
        common = dict(
            alert_id=contract.alert_id(p, "spo2_low", ms), patient_id=p, rule="spo2_low",
            severity="high", episode_start=ms, retrospective=False, metric="spo2",
            device_id="w1",
        )  # fmt: skip
        detections.append(
            contract.Detection(**common, state="opened", at=ms, detected=ms + 5, value=88.0)
        )
        detections.append(
            contract.Detection(
                **common, state="resolved", at=ms + 600_000, detected=ms + 600_005, value=93.0
            )
        )
    conn = await asyncpg.connect(database_url)
    try:
        await store.store(conn, [store.row_of(d) for d in detections])
    finally:
        await conn.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def quick(database_url: str, **update: Any) -> Settings:
    fast = {"api_port": 0, "registry_refresh_s": 0.2, "audit_flush_s": 0.05}
    return Settings(database_url=database_url, **{**fast, **update})


async def store_open(conn: asyncpg.Connection, p: str, *, resolved: bool = False) -> str:
    """An opened, published high alert of `p` that started a minute ago (resolved too)."""
    start = contract.now_ms() - 60_000
    common = dict(
        alert_id=contract.alert_id(p, "spo2_low", start), patient_id=p, rule="spo2_low",
        severity="high", episode_start=start, retrospective=False, metric="spo2",
        device_id="w1", value=87.0,
    )  # fmt: skip
    detections = [contract.Detection(**common, state="opened", at=start, detected=start + 5)]
    if resolved:
        detections.append(
            contract.Detection(**common, state="resolved", at=start + 30, detected=start + 35)
        )
    rows = [store.row_of(d) for d in detections]
    await store.store(conn, rows)
    now = await conn.fetchval("SELECT now()")
    await store.mark_published(conn, store.keys_of(rows), now)
    return common["alert_id"]


VITALS = {
    "resp_rate": 22.0, "spo2": 95.0, "supplemental_o2": 0.0, "systolic_bp": 105.0,
    "heart_rate": 115.0, "consciousness": 0.0, "body_temp": 38.5,
}  # fmt: skip


async def store_scores_computed_from(database_url: str, uploads: Sequence[contract.Upload]) -> None:
    """What the pipeline stores: the processor's engine scores the uploads, the timescale
    sink's statement writes the score records."""
    engine = Engine(rules_from_settings(Settings()))
    records: list[contract.News2Score] = []
    for u in uploads:
        engine.feed("p0", u, now=u.received, scores=records)
    conn = await asyncpg.connect(database_url)
    try:
        await upsert_scores(conn, [score_row(r) for r in records])
    finally:
        await conn.close()


def vitals_upload(p: str, t: datetime, **values: float) -> contract.Upload:
    ms = int(t.timestamp() * 1000)
    readings = tuple(contract.Reading(m, ms, v, METRICS[m].unit) for m, v in values.items())
    return contract.Upload(str(uuid.uuid4()), "gw", "w1", p, ms, readings)


HTML_NOTE = '<script>alert("x")</script><img src=x onerror=alert(1)> called daughter'


async def key_loaded(client: httpx.AsyncClient, key: str, p: str) -> None:
    async def readable() -> bool:
        answer = await client.get(f"/v1/patients/{p}/alerts", headers=bearer(key))
        return answer.status_code == 200

    await until(readable, "the team key loaded", 10)

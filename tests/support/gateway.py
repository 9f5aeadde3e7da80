"""The gateway in this process for integration tests: uploads, limits, a client, problems."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from ingest.server import build_server
from tests.support.polling import eventually
from tests.support.serving import serving
from vitals.settings import LOCAL_GATEWAY_TOKEN, Settings

AUTH = {"Authorization": f"Bearer {LOCAL_GATEWAY_TOKEN}"}


JSON = {**AUTH, "Content-Type": "application/json"}


PATIENT, DEVICE = "p-00017", "watch-8842"


def reading(
    metric: str = "heart_rate",
    t: str = "2026-01-01T10:00:00+08:00",
    v: Any = 72,
    unit: str = "/min",
) -> dict[str, Any]:
    return {"metric": metric, "t": t, "v": v, "unit": unit}


def upload(*readings: Any, patient_id: str = PATIENT) -> bytes:
    return orjson.dumps(
        {"device_id": DEVICE, "patient_id": patient_id, "readings": list(readings) or [reading()]}
    )


def limits(settings: Settings, **update: Any) -> Settings:
    """Small limits keep the too-large cases small; port 0 lets the OS pick one."""
    return settings.model_copy(
        update={
            "gateway_port": 0,
            "max_body_bytes": 16_384,
            "max_decompressed_bytes": 65_536,
            "max_readings_per_upload": 200,
            "produce_timeout_s": 2.0,
            "retry_after_s": 7,
            **update,
        }
    )


@asynccontextmanager
async def running(
    settings: Settings, *, wait_ready: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on uvicorn in a task, and an HTTP client pointed at it."""
    async with serving(build_server(settings)) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            if wait_ready:
                await eventually(lambda: is_ready(client), 10)
            yield client


async def is_ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


async def post(
    client: httpx.AsyncClient, content: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post("/v1/readings", content=content, headers=headers or JSON)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert (doc["status"], doc["code"], doc["type"]) == (status, code, f"urn:vitals:problem:{code}")
    assert doc["title"] and doc["detail"]
    return doc

"""The gateway with its registry enforced, as deployments run it: keys, a fleet, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
from fastapi import FastAPI

from frontdoor import registry_store
from frontdoor.refresher import RegistryCache
from ingest.app import create_app
from ingest.server import build_server
from tests.support.cli import CLI
from tests.support.gateway import is_ready, limits
from tests.support.polling import eventually
from tests.support.serving import serving
from vitals.settings import Settings

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def body(device: str, patient: str, *times: datetime, v: float = 72) -> bytes:
    return orjson.dumps(
        {
            "device_id": device,
            "patient_id": patient,
            "readings": [
                {"metric": "heart_rate", "t": t.isoformat(), "v": v, "unit": "/min"}
                for t in (times or (T0,))
            ],
        }
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@dataclass
class Gateway:
    client: httpx.AsyncClient
    app: FastAPI
    port: int

    async def post(self, key: str, content: bytes) -> httpx.Response:
        headers = bearer(key) if key else {"Content-Type": "application/json"}
        return await self.client.post("/v1/readings", content=content, headers=headers)

    async def reload(self) -> None:
        registry: RegistryCache = self.app.state.registry
        assert await registry.refresh(self.app.state.pool)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings)
    async with serving(build_server(settings, app)) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await eventually(lambda: is_ready(client), 10)
            yield Gateway(client, app, port)


def secured(settings: Settings, **update: Any) -> Settings:
    """The registry on and enforced; no environment credentials."""
    return limits(
        settings,
        **{
            "gateway_registry": True,
            "require_device_registry": True,
            "gateway_credentials": "",
            "registry_refresh_s": 60.0,  # tests reload explicitly, or shorten it
            "audit_flush_s": 0.05,
            **update,
        },
    )


async def issue(db: asyncpg.Connection, gateway_id: str, **kw: Any) -> str:
    _, key = await registry_store.issue_key(
        db, "gateway", gateway_id, expires_at=kw.get("expires_at"), actor=CLI
    )
    return key

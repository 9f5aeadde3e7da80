"""The admin API: the device registry and care teams, with admin tokens (never gateway keys).

Served by the gateway when `gateway_registry` is on. Each change is written and audited in
one transaction (frontdoor/registry_store.py), then this replica reloads its registry at once;
the other replicas see it within `registry_refresh_s`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field
from starlette.responses import Response

from frontdoor import registry_store
from frontdoor.auth import Authenticator
from frontdoor.problems import json_response
from frontdoor.refresher import RegistryCache
from ingest.jsonkeys import refuse_repeated_keys
from vitals.bounds import identifier_problem
from vitals.logs import exception_fields

log = logging.getLogger(__name__)


async def _unique_keys(request: Request) -> None:
    """A body that repeats a key is 400 malformed_json, as at the upload door: FastAPI's
    parser (json) would keep the last value without a word (ingest/jsonkeys.py)."""
    raw = await request.body()  # read and kept already by FastAPI for the body model
    if not raw:
        return
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # FastAPI answers it (400 invalid_request, json_invalid)
    refuse_repeated_keys(raw, doc)


router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(_unique_keys)])


def _checked(value: str) -> str:
    problem = identifier_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_checked)]


class Registration(BaseModel):
    device_id: Identifier
    patient_id: Identifier
    gateways: list[Identifier] = Field(min_length=1, max_length=100)
    since: AwareDatetime | None = None  # default: now


class Team(BaseModel):
    team_id: Identifier


class Move(BaseModel):
    patient_id: Identifier
    since: AwareDatetime | None = None


async def admin_id(request: Request) -> tuple[str, str]:
    authenticator: Authenticator = request.app.state.authenticator
    return "admin", authenticator.admin_for(request.headers.get("authorization"))


Admin = Annotated[tuple[str, str], Depends(admin_id)]


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool | None = request.app.state.pool
    # The router is only included with gateway_registry, whose lifespan makes the pool.
    assert pool is not None, "the admin API needs gateway_registry"
    return pool


async def _changed(request: Request, pool: asyncpg.Pool) -> Response:
    """204 once the change is committed, whatever this replica's reload does: a reload that
    fails is logged and counted (frontdoor/refresher.py) and tried again by the refresher."""
    registry: RegistryCache = request.app.state.registry
    try:
        await registry.refresh(pool)
    except Exception as exc:  # noqa: BLE001 - committed already: never a 500 after that
        log.error("registry reload after an admin change failed", extra=exception_fields(exc))
    return Response(status_code=204)


def _since(value: datetime | None) -> datetime:
    return value or registry_store.now()


@router.get("/devices")
async def list_devices(request: Request, actor: Admin) -> Response:
    async with (await _pool(request)).acquire() as conn:
        rows = await registry_store.list_devices(conn)
    return json_response({"devices": [_plain(r) for r in rows]})


@router.post("/devices", status_code=204)
async def register_device(request: Request, actor: Admin, body: Registration) -> Response:
    pool = await _pool(request)
    async with pool.acquire() as conn:
        await registry_store.register_device(
            conn,
            body.device_id,
            body.patient_id,
            body.gateways,
            since=_since(body.since),
            actor=actor,
        )
    return await _changed(request, pool)


@router.put("/devices/{device_id}/gateways/{gateway_id}", status_code=204)
async def bind_gateway(
    request: Request, actor: Admin, device_id: Identifier, gateway_id: Identifier
) -> Response:
    pool = await _pool(request)
    async with pool.acquire() as conn:
        await registry_store.bind_gateway(conn, device_id, gateway_id, actor=actor)
    return await _changed(request, pool)


@router.delete("/devices/{device_id}/gateways/{gateway_id}", status_code=204)
async def unbind_gateway(
    request: Request, actor: Admin, device_id: Identifier, gateway_id: Identifier
) -> Response:
    pool = await _pool(request)
    async with pool.acquire() as conn:
        await registry_store.unbind_gateway(conn, device_id, gateway_id, actor=actor)
    return await _changed(request, pool)


@router.post("/devices/{device_id}/moves", status_code=204)
async def move_device(
    request: Request, actor: Admin, device_id: Identifier, body: Move
) -> Response:
    pool = await _pool(request)
    async with pool.acquire() as conn:
        await registry_store.move_device(
            conn, device_id, body.patient_id, since=_since(body.since), actor=actor
        )
    return await _changed(request, pool)


# Care teams: who may read which patient through the read API. The read API (another
# process) picks a change up at its next reload of the reader keys.
@router.get("/teams")
async def list_teams(request: Request, actor: Admin) -> Response:
    async with (await _pool(request)).acquire() as conn:
        rows = await registry_store.list_teams(conn)
    return json_response({"teams": [_plain(r) for r in rows]})


@router.post("/teams", status_code=204)
async def add_team(request: Request, actor: Admin, body: Team) -> Response:
    async with (await _pool(request)).acquire() as conn:
        await registry_store.add_team(conn, body.team_id, actor=actor)
    return Response(status_code=204)


@router.put("/teams/{team_id}/patients/{patient_id}", status_code=204)
async def assign_patient(
    request: Request, actor: Admin, team_id: Identifier, patient_id: Identifier
) -> Response:
    return await _assign(request, actor, team_id, patient_id, assign=True)


@router.delete("/teams/{team_id}/patients/{patient_id}", status_code=204)
async def unassign_patient(
    request: Request, actor: Admin, team_id: Identifier, patient_id: Identifier
) -> Response:
    return await _assign(request, actor, team_id, patient_id, assign=False)


async def _assign(
    request: Request, actor: tuple[str, str], team_id: str, patient_id: str, *, assign: bool
) -> Response:
    async with (await _pool(request)).acquire() as conn:
        await registry_store.assign_patients(
            conn, team_id, [patient_id], assign=assign, actor=actor
        )
    return Response(status_code=204)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, list | tuple) else v for k, v in row.items()}

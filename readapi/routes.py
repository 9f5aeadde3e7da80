"""The read API's routes: check the parameters (params.py), run one query (queries.py),
shape the page. Every answer but /healthz, /readyz and /metrics needs a reader credential,
and every read of a patient's data goes through the access guard (access.py): limits,
the reader's care teams, the read audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import asyncpg
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from frontdoor.auth import Authenticator
from frontdoor.problems import json_response, problem_response
from frontdoor.registry import Credential
from readapi import news2 as news2_scores
from readapi import params, queries
from readapi.access import Access

router = APIRouter()

_NIL = str(uuid.UUID(int=0))
PING_TIMEOUT_S = 2.0


async def reader(request: Request) -> Credential:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.reader_for(request.headers.get("authorization"))


Reader = Annotated[Credential, Depends(reader)]


def pool_of(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def access_of(request: Request) -> Access:
    return request.app.state.access


def _cursor_key(request: Request) -> bytes:
    return request.app.state.cursor_key


@router.get("/v1/patients/{patient_id}/readings")
async def readings(request: Request, patient_id: str, key: Reader) -> Response:
    patient = params.patient(patient_id)
    async with access_of(request).reading(key, "readings", patient) as read:
        page = await _readings(request, patient)
        read.rows = len(page["items"])
    return json_response(page)


async def _readings(request: Request, patient: str) -> dict[str, Any]:
    q = params.only(query_lists(request), ("metric", "from", "to", "resolution", "limit", "cursor"))
    metric = params.metric(q.get("metric"))
    start = params.moment("from", q.get("from"))
    end = params.moment("to", q.get("to"))
    params.window(start, end)
    resolution = params.resolution(q.get("resolution"), start, end)
    rows = params.limit(q.get("limit"), request.app.state.settings.api_page_max)
    scope = f"readings:{patient}:{metric}:{resolution}"
    raw = resolution == "raw"
    cursor = params.decode_cursor(q.get("cursor"), scope, _cursor_key(request))

    async with pool_of(request).acquire() as conn:
        if raw:
            after = (cursor.at, cursor.tie[0]) if cursor else (params.EARLIEST, "")
            found = await queries.raw(conn, patient, metric, start, end, after, rows + 1)
        else:
            after_bucket = cursor.at if cursor else params.EARLIEST
            found = await queries.buckets(
                conn, resolution, patient, metric, start, end, after_bucket, rows + 1
            )
    page, more = found[:rows], len(found) > rows
    next_cursor = None
    if more:
        last = page[-1]
        tie = (last["device_id"],) if raw else ()
        at = last["t"] if raw else last["bucket"]
        next_cursor = params.encode_cursor(params.Cursor(scope, at, tie), _cursor_key(request))
    items = [_reading(r) if raw else _bucket(r) for r in page]
    return {
        "patient_id": patient,
        "metric": metric,
        "from": start,
        "to": end,
        "resolution": resolution,
        "items": items,
        "next_cursor": next_cursor,
    }


@router.get("/v1/patients/{patient_id}/alerts")
async def alerts(request: Request, patient_id: str, key: Reader) -> Response:
    patient = params.patient(patient_id)
    async with access_of(request).reading(key, "alerts", patient) as read:
        page = await _alerts(request, patient)
        read.rows = len(page["items"])
    return json_response(page)


async def _alerts(request: Request, patient: str) -> dict[str, Any]:
    q = params.only(query_lists(request), ("from", "to", "state", "limit", "cursor"))
    start, end = params.open_window(q)
    state = params.state(q.get("state"))
    rows = params.limit(q.get("limit"), request.app.state.settings.api_page_max)
    scope = f"alerts:{patient}:{state or 'any'}"
    cursor = params.decode_cursor(q.get("cursor"), scope, _cursor_key(request))
    # First page: everything before `end` (at < end already holds for every row).
    first: tuple[object, ...] = (end, _NIL, "")
    before = cast(tuple[datetime, str, str], (cursor.at, *cursor.tie) if cursor else first)
    async with pool_of(request).acquire() as conn:
        found = await queries.alerts(conn, patient, start, end, state, before, rows + 1)
    page, more = found[:rows], len(found) > rows
    next_cursor = None
    if more:
        last = page[-1]
        tie = (str(last["alert_id"]), last["state"])
        next_cursor = params.encode_cursor(
            params.Cursor(scope, last["at"], tie), _cursor_key(request)
        )
    return {"patient_id": patient, "items": [_alert(r) for r in page], "next_cursor": next_cursor}


@router.get("/v1/patients/{patient_id}/news2")
async def news2(request: Request, patient_id: str, key: Reader) -> Response:
    patient = params.patient(patient_id)
    async with access_of(request).reading(key, "news2", patient) as read:
        q = params.only(query_lists(request), ("at",))
        at = params.optional_moment("at", q.get("at")) or datetime.now(UTC)
        async with pool_of(request).acquire() as conn:
            row = await queries.news2_latest(conn, patient, at)
        score = news2_scores.current(at, row)
        read.rows = 1
    return json_response({"patient_id": patient, **score})


@router.get("/v1/patients/{patient_id}/news2/history")
async def news2_history(request: Request, patient_id: str, key: Reader) -> Response:
    patient = params.patient(patient_id)
    async with access_of(request).reading(key, "news2/history", patient) as read:
        page = await _news2_history(request, patient)
        read.rows = len(page["items"])
    return json_response(page)


async def _news2_history(request: Request, patient: str) -> dict[str, Any]:
    q = params.only(query_lists(request), ("from", "to", "limit", "cursor"))
    start, end = params.open_window(q)
    rows = params.limit(q.get("limit"), request.app.state.settings.api_page_max)
    scope = f"news2:{patient}"
    cursor = params.decode_cursor(q.get("cursor"), scope, _cursor_key(request))
    after = cursor.at if cursor else params.EARLIEST
    async with pool_of(request).acquire() as conn:
        found = await queries.news2_history(conn, patient, start, end, after, rows + 1)
    page, more = found[:rows], len(found) > rows
    next_cursor = None
    if more:
        next_cursor = params.encode_cursor(
            params.Cursor(scope, page[-1]["t"], ()), _cursor_key(request)
        )
    return {
        "patient_id": patient,
        "items": [news2_scores.score(r) for r in page],
        "next_cursor": next_cursor,
    }


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when the database answers a query within PING_TIMEOUT_S and the reader keys
    have been loaded from it once (before that, every issued key would be refused).
    `live_feed` says whether the console's live feed reads the broker; it is reported, not
    required: every read, and the console's periodic snapshots, work without Kafka."""
    why = None
    try:
        async with pool_of(request).acquire(timeout=PING_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        why = "the database is not reachable"
    else:
        if not request.app.state.keys.fresh():
            why = "the reader keys have not been loaded from the database recently"
    if why is not None:
        retry = str(request.app.state.settings.retry_after_s)
        return problem_response(503, "not_ready", "Not ready", why, {"Retry-After": retry})
    live = "reading" if request.app.state.feed.up else "not_reading"
    return json_response({"ready": True, "live_feed": live})


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def query_lists(request: Request) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        lists.setdefault(name, []).append(value)
    return lists


def _reading(r: Any) -> dict[str, Any]:
    return {"t": r["t"], "value": r["value"], "unit": r["unit"], "device_id": r["device_id"]}


def _bucket(r: Any) -> dict[str, Any]:
    return {
        "bucket": r["bucket"],
        "min": r["min_value"],
        "max": r["max_value"],
        "avg": r["avg_value"],
        "n": r["n"],
    }


def _alert(r: Any) -> dict[str, Any]:
    return {**dict(r), "alert_id": str(r["alert_id"])}

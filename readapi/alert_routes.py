"""Routes for the people who answer alerts: the open alerts of the reader's care teams,
acknowledging one, recording its outcome. Checks in lifecycle.py, the guard in access.py:
an alert of a patient outside the reader's teams is `404 no_such_alert`, as is one that
does not exist, and every action is on record in the read audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.errors import AlertConflict, Malformed, NotFound, TooLarge
from frontdoor.problems import json_response
from frontdoor.registry import Credential
from readapi import board, lifecycle, params
from readapi.routes import Reader, access_of, pool_of, query_lists

router = APIRouter()

BODY_MAX = 16_384  # an outcome with its note is far smaller


def no_such_alert() -> NotFound:
    return NotFound("no_such_alert", "no alert with this id in this reader's care teams")


@router.get("/v1/alerts")
async def open_alerts(request: Request, key: Reader) -> Response:
    q = params.only(query_lists(request), ("state", "limit"))
    if q.get("state", "open") != "open":
        raise Malformed("bad_state", "state must be open (the alerts needing a person)")
    rows = params.limit(q.get("limit"), lifecycle.OPEN_MAX)
    async with access_of(request).listing(key, "alerts/open") as listing:
        items = await open_items(request, listing.patients, rows)
        for item in items:
            listing.rows[item["patient_id"]] = listing.rows.get(item["patient_id"], 0) + 1
    return json_response({"items": items})


async def open_items(
    request: Request, patients: list[str] | None, rows: int = lifecycle.OPEN_MAX
) -> list[dict[str, Any]]:
    """Open alerts of `patients` (None: all), oldest first, each with how long it is open."""
    if patients == []:
        return []
    now = datetime.now(UTC)
    async with pool_of(request).acquire() as conn:
        found = await conn.fetch(lifecycle.OPEN, patients, now - lifecycle.OPEN_LOOKBACK, rows)
    return [{**dict(r), "alert_id": str(r["alert_id"]), "open_s": _open_s(r, now)} for r in found]


@router.get("/v1/board")
async def patients_board(request: Request, key: Reader) -> Response:
    """The console's board (board.py): every patient of the reader, call-first order."""
    params.only(query_lists(request), ())
    return json_response(await board_snapshot(request, key, "board"))


async def board_snapshot(request: Request, key: Credential, route: str) -> dict[str, Any]:
    """The board of `key`'s patients now, read through the access guard (limits, audit);
    also the first event of every console stream (live_routes.py)."""
    now = datetime.now(UTC)
    async with access_of(request).listing(key, route) as listing:
        alerts = await open_items(request, listing.patients)
        async with pool_of(request).acquire() as conn:
            patients = listing.patients
            if patients is None:  # an all-patients key: those seen lately
                patients = await board.patients_seen(conn, now - board.RECENT)
            entries = await board.board(conn, patients[: board.BOARD_MAX], alerts, now)
        for entry in entries:
            listing.rows[entry["patient_id"]] = len(entry["vitals"]) + len(entry["alerts"]) + 1
    return {"at": now, "patients": entries}


@router.post("/v1/alerts/{alert_id}/acknowledge")
async def acknowledge(request: Request, alert_id: str, key: Reader) -> Response:
    alert = lifecycle.alert_id(alert_id)
    lifecycle.empty_body(await _body(request))
    return await _act(request, key, alert, "acknowledged")


@router.post("/v1/alerts/{alert_id}/outcome")
async def outcome(request: Request, alert_id: str, key: Reader) -> Response:
    alert = lifecycle.alert_id(alert_id)
    chosen, note = lifecycle.outcome_body(await _body(request))
    return await _act(request, key, alert, "outcome", outcome=chosen, note=note)


async def _act(
    request: Request, key: Credential, alert: Any, state: str, **fields: Any
) -> Response:
    async with pool_of(request).acquire() as conn:
        found = await lifecycle.alert(conn, alert)
        if found is None:  # no patient to attribute it to: not a read of anyone's data
            raise no_such_alert()
        route = f"alerts/{state}"
        async with access_of(request).reading(
            key, route, found["patient_id"], missing=no_such_alert
        ) as read:
            if state == "acknowledged" and found["resolved"]:
                raise AlertConflict(
                    "alert_resolved", "this alert is resolved; nothing to acknowledge"
                )
            at = await lifecycle.record(
                conn, alert, found, state, key_id=key.key_id, actor=key.principal, **fields
            )
            read.rows = 1
    answer = {"alert_id": str(alert), "state": state, "at": at, "by": key.principal}
    if state == "outcome":
        answer["outcome"] = fields["outcome"]
    return json_response(answer, 201)


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            raise TooLarge("body_too_large", f"the body is larger than {BODY_MAX} bytes")
    return body


def _open_s(r: Any, now: datetime) -> float:
    return round(max(0.0, (now - (r["published_at"] or r["at"])).total_seconds()), 1)

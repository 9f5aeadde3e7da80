"""A patient's alert history and device bindings, for the console's patient view.

`/v1/patients/{id}/alerts` lists the detectors' rows (opened, resolved); the history is
one item per alert episode with what people and the escalation did about it: when it
resolved, who acknowledged it, the escalation level reached, the outcome with its note.
Both reads go through the access guard like every read of a patient's data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.problems import json_response
from readapi import params
from readapi.routes import Reader, access_of, pool_of, query_lists

router = APIRouter()

HISTORY_MAX = 500  # episodes a page may hold
DEVICES_MAX = 100  # bindings: a patient wears a handful of devices over a stay

# Newest first. $1 patient, [$2, $3) on the episode's opening, before ($4 at, $5 alert id),
# $6 rows. Retrospective and suppressed episodes are history too (flagged, never paged).
HISTORY = """
SELECT o.alert_id, o.rule, o.severity, o.episode_start, o.at AS opened_at, o.published_at,
       o.retrospective, o.suppressed, o.metric, o.value, o.device_id,
       (SELECT r.at FROM alerts r WHERE r.alert_id = o.alert_id AND r.state = 'resolved'
          AND r.episode_start = o.episode_start) AS resolved_at,
       a.at AS acknowledged_at, a.actor AS acknowledged_by,
       (SELECT max(e.level) FROM alert_lifecycle e
         WHERE e.alert_id = o.alert_id AND e.state = 'escalated') AS escalation_level,
       x.outcome, x.note, x.at AS outcome_at, x.actor AS outcome_by
FROM alerts o
LEFT JOIN alert_lifecycle a ON a.alert_id = o.alert_id AND a.state = 'acknowledged'
LEFT JOIN alert_lifecycle x ON x.alert_id = o.alert_id AND x.state = 'outcome'
WHERE o.patient_id = $1 AND o.state = 'opened' AND o.at >= $2 AND o.at < $3
  AND (o.at, o.alert_id) < ($4, $5::uuid)
ORDER BY o.at DESC, o.alert_id DESC
LIMIT $6
"""

# The devices bound to the patient, the current binding first (device_patients_patient,
# 0016).
DEVICES = """
SELECT device_id, valid_from, valid_to, valid_to IS NULL AS current
FROM device_patients
WHERE patient_id = $1
ORDER BY valid_to IS NULL DESC, valid_from DESC
LIMIT $2
"""

_LAST_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"


@router.get("/v1/patients/{patient_id}/alert-history")
async def alert_history(request: Request, patient_id: str, key: Reader) -> Response:
    patient = params.patient(patient_id)
    async with access_of(request).reading(key, "alert-history", patient) as read:
        page = await _history(request, patient)
        read.rows = len(page["items"])
    return json_response(page)


async def _history(request: Request, patient: str) -> dict[str, Any]:
    q = params.only(query_lists(request), ("from", "to", "limit", "cursor"))
    start, end = params.open_window(q)
    rows = params.limit(q.get("limit"), HISTORY_MAX)
    scope = f"alert-history:{patient}"
    cursor = params.decode_cursor(q.get("cursor"), scope, request.app.state.cursor_key)
    before = cast(tuple[datetime, str], (cursor.at, *cursor.tie) if cursor else (end, _LAST_ID))
    async with pool_of(request).acquire() as conn:
        found = await conn.fetch(HISTORY, patient, start, end, *before, rows + 1)
    page, more = found[:rows], len(found) > rows
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = params.encode_cursor(
            params.Cursor(scope, last["opened_at"], (str(last["alert_id"]),)),
            request.app.state.cursor_key,
        )
    return {"patient_id": patient, "items": [_episode(r) for r in page], "next_cursor": next_cursor}


@router.get("/v1/patients/{patient_id}/devices")
async def devices(request: Request, patient_id: str, key: Reader) -> Response:
    patient = params.patient(patient_id)
    params.only(query_lists(request), ())
    async with access_of(request).reading(key, "devices", patient) as read:
        async with pool_of(request).acquire() as conn:
            found = await conn.fetch(DEVICES, patient, DEVICES_MAX)
        read.rows = len(found)
    return json_response({"patient_id": patient, "items": [dict(r) for r in found]})


def _episode(r: Any) -> dict[str, Any]:
    item = dict(r)
    item["alert_id"] = str(r["alert_id"])
    item["escalation_level"] = r["escalation_level"] or 0
    return item

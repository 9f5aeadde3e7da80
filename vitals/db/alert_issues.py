"""An alert's whole state from the database, for its FHIR form (vitals/fhir_alerts.py):
the opened row, its resolution and its human states. Read by the read API (GET
/fhir/r4/DetectedIssue) and by the FHIR notifier (full-resource notifications), so both
send the same resource. Suppressed repeats are left out: they are never published."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from vitals import contract
from vitals.db.pgtime import to_ms
from vitals.fhir_alerts import Alert, Change

# $1 alert ids (NULL: any), $2 patient (NULL: any), ($3, $4) strictly after this
# (episode_start, alert_id) in newest-first order (NULL: from the newest), $5 rows.
_OPENED = """
SELECT o.*, r.at AS resolved_at
FROM alerts o
LEFT JOIN alerts r ON r.alert_id = o.alert_id AND r.state = 'resolved'
                  AND r.episode_start = o.episode_start
WHERE o.state = 'opened' AND NOT o.suppressed
  AND ($1::uuid[] IS NULL OR o.alert_id = ANY($1))
  AND ($2::text IS NULL OR o.patient_id = $2)
  AND ($3::timestamptz IS NULL OR (o.episode_start, o.alert_id) < ($3, $4::uuid))
ORDER BY o.episode_start DESC, o.alert_id DESC
LIMIT $5
"""

_CHANGES = """
SELECT alert_id, state, level, at, actor, outcome FROM alert_lifecycle
WHERE alert_id = ANY($1::uuid[])
"""


async def alerts(
    conn: asyncpg.Connection,
    *,
    ids: Sequence[uuid.UUID] | None = None,
    patient_id: str | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    rows: int = 1000,
) -> list[Alert]:
    """Alerts by id or by patient, newest episode first."""
    start, tie = after if after is not None else (None, None)
    opened = await conn.fetch(
        _OPENED, None if ids is None else list(ids), patient_id, start, tie, rows
    )
    found = [r["alert_id"] for r in opened]
    changes: dict[uuid.UUID, list[Change]] = {}
    if found:
        for c in await conn.fetch(_CHANGES, found):
            changes.setdefault(c["alert_id"], []).append(
                Change(c["state"], c["level"], to_ms(c["at"]), c["actor"], c["outcome"])
            )
    return [
        Alert(
            opened=detection_of(r),
            resolved_ms=None if r["resolved_at"] is None else to_ms(r["resolved_at"]),
            changes=tuple(changes.get(r["alert_id"], ())),
        )
        for r in opened
    ]


def detection_of(record: asyncpg.Record) -> contract.Detection:
    """A stored alerts row as the detection it was stored from. The stored version is the
    one published: a redelivered detection that differs (a processor replayed it later)
    never replaces it."""
    return contract.Detection(
        alert_id=str(record["alert_id"]),
        patient_id=record["patient_id"],
        rule=record["rule"],
        state=record["state"],
        severity=record["severity"],
        episode_start=to_ms(record["episode_start"]),
        at=to_ms(record["at"]),
        detected=to_ms(record["detected_at"]),
        retrospective=record["retrospective"],
        metric=record["metric"],
        value=record["value"],
        device_id=record["device_id"],
        detail=record["detail"],
        suppressed=record["suppressed"],
    )

"""The alarm burden of the reader's care teams over a range: per rule, alerts per
patient-day, the share of each recorded outcome (the rules' real-world false-alarm rate),
time to acknowledge (median, 90th percentile) and escalations: one SQL statement over
`alerts` and `alert_lifecycle`, the patient-days from the hourly rollup.

Definitions (docs/read-api.md#alarm-burden-get-v1burden): an alert is an opened, paged
episode (not suppressed, not retrospective) that started in the range. A patient-day is a
patient with at least one reading on a UTC day in the range. Time to acknowledge runs from
the alert's publication to the first human response (the acknowledgement, or the outcome
when one was recorded without it); unanswered alerts are left out of it and counted as
`unanswered`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.errors import Malformed
from frontdoor.problems import json_response
from readapi import params
from readapi.routes import Reader, access_of, pool_of, query_lists
from vitals.contract import OUTCOMES

router = APIRouter()

DEFAULT_RANGE = timedelta(days=7)
LONGEST_RANGE = timedelta(days=92)  # a quarter: the statement stays within its timeout

# $1 patients (NULL: every patient), [$2, $3) on the episode's start.
_ALERTS = """
WITH paged AS (
  SELECT o.alert_id, o.patient_id, o.rule, coalesce(o.published_at, o.at) AS paged_at
  FROM alerts o
  WHERE o.state = 'opened' AND NOT o.suppressed AND NOT o.retrospective
    AND o.episode_start >= $2 AND o.episode_start < $3
    AND ($1::text[] IS NULL OR o.patient_id = ANY($1))
), answered AS (
  SELECT p.*, x.outcome,
         (SELECT max(e.level) FROM alert_lifecycle e
           WHERE e.alert_id = p.alert_id AND e.state = 'escalated') AS escalation_level,
         extract(epoch FROM least(a.at, x.at) - p.paged_at) AS answer_s
  FROM paged p
  LEFT JOIN alert_lifecycle a ON a.alert_id = p.alert_id AND a.state = 'acknowledged'
  LEFT JOIN alert_lifecycle x ON x.alert_id = p.alert_id AND x.state = 'outcome'
)
SELECT rule, count(*) AS alerts, count(DISTINCT patient_id) AS patients,
       count(answer_s) AS answered,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY answer_s) AS ack_p50_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY answer_s) AS ack_p90_s,
       count(*) FILTER (WHERE escalation_level >= 1) AS escalated,
       coalesce(max(escalation_level), 0) AS highest_level,
       count(outcome) AS with_outcome,
       {outcomes}
FROM answered
GROUP BY GROUPING SETS ((rule), ())
ORDER BY rule NULLS LAST
"""
ALERTS = _ALERTS.format(
    outcomes=",\n       ".join(
        f"count(*) FILTER (WHERE outcome = '{o}') AS \"{o}\"" for o in OUTCOMES
    )
)

# Patients with a reading on a UTC day, counted per (patient, day), and who they are (the
# read audit records every patient whose data the answer is made of).
PATIENT_DAYS = """
SELECT patient_id, count(DISTINCT date_trunc('day', bucket AT TIME ZONE 'UTC')) AS days
FROM readings_1h
WHERE bucket >= $2 AND bucket < $3
  AND ($1::text[] IS NULL OR patient_id = ANY($1))
GROUP BY patient_id
"""

ALERTED = """
SELECT patient_id, count(*) AS alerts FROM alerts
WHERE state = 'opened' AND NOT suppressed AND NOT retrospective
  AND episode_start >= $2 AND episode_start < $3
  AND ($1::text[] IS NULL OR patient_id = ANY($1))
GROUP BY patient_id
"""


@router.get("/v1/burden")
async def burden(request: Request, key: Reader) -> Response:
    q = params.only(query_lists(request), ("from", "to"))
    end = params.optional_moment("to", q.get("to")) or datetime.now(UTC)
    start = params.optional_moment("from", q.get("from")) or end - DEFAULT_RANGE
    params.window(start, end)
    if end - start > LONGEST_RANGE:
        raise Malformed("bad_range", f"the range is longer than {LONGEST_RANGE.days} days")
    async with access_of(request).listing(key, "burden") as listing:
        if listing.patients == []:
            return json_response(summary(start, end, [], {}))
        async with pool_of(request).acquire() as conn:
            found = await compute(conn, listing.patients, start, end)
        days, alerted, rows = found
        for patient in {**days, **alerted}:
            listing.rows[patient] = 1  # an aggregate: one row of each patient's data
    return json_response(summary(start, end, rows, days))


async def compute(
    conn: asyncpg.Connection, patients: list[str] | None, start: datetime, end: datetime
) -> tuple[dict[str, int], dict[str, int], list[asyncpg.Record]]:
    span = (patients, start, end)
    days = {r["patient_id"]: r["days"] for r in await conn.fetch(PATIENT_DAYS, *span)}
    alerted = {r["patient_id"]: r["alerts"] for r in await conn.fetch(ALERTED, *span)}
    return days, alerted, await conn.fetch(ALERTS, *span)


def summary(
    start: datetime, end: datetime, rows: list[Any], days: dict[str, int]
) -> dict[str, Any]:
    """The answer: one entry per rule and the total (`rule` null)."""
    patient_days = sum(days.values())
    entries = []
    for r in rows:
        n, with_outcome = r["alerts"], r["with_outcome"]
        entries.append({
            "rule": r["rule"],
            "alerts": n,
            "patients": r["patients"],
            "per_patient_day": round(n / patient_days, 3) if patient_days else None,
            "answered": r["answered"],
            "unanswered": n - r["answered"],
            "ack_p50_s": _round(r["ack_p50_s"]),
            "ack_p90_s": _round(r["ack_p90_s"]),
            "escalated": r["escalated"],
            "highest_level": r["highest_level"],
            "with_outcome": with_outcome,
            "outcomes": {o: r[o] for o in OUTCOMES},
            # Of the alerts given an outcome; null before any outcome is recorded.
            "outcome_shares": {
                o: round(r[o] / with_outcome, 3) if with_outcome else None for o in OUTCOMES
            },
        })  # fmt: skip
    total = next((e for e in entries if e["rule"] is None), None)
    return {
        "from": start,
        "to": end,
        "patient_days": patient_days,
        "rules": [e for e in entries if e["rule"] is not None],
        "total": total,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)

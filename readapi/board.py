"""The console's board: per patient of the reader, the latest vitals with their age, the
current NEWS2, the open alerts; sorted so that the patient to call first is on top.

The order (`call_first`) is a pure function, tested without HTTP: an unacknowledged alert
before an acknowledged one, then the highest severity, the highest escalation level, the
longest open; patients without an open alert after every one with, the stalest data first
(a silent device is a patient nobody is watching).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from vitals.catalog import METRICS

BOARD_METRICS = ("heart_rate", "spo2", "resp_rate", "systolic_bp", "body_temp", "glucose")
# Latest values older than this are not shown: the board is about now.
FRESH_FOR = timedelta(hours=6)
# An all-patients key sees the patients with an open alert or a reading this recent.
RECENT = timedelta(minutes=10)
BOARD_MAX = 500
_SEVERITY = {"high": 3, "medium": 2, "low": 1}

# One backward probe of the readings key per patient and metric.
LATEST = """
SELECT p.patient_id, m.metric, r.t, r.value, r.unit
FROM unnest($1::text[]) AS p(patient_id)
CROSS JOIN unnest($2::text[]) AS m(metric)
CROSS JOIN LATERAL (SELECT t, value, unit FROM readings
                    WHERE patient_id = p.patient_id AND metric = m.metric AND t >= $3
                    ORDER BY t DESC LIMIT 1) r
"""

NEWS2 = """
SELECT p.patient_id, s.t, s.news2, s.band, s.partial
FROM unnest($1::text[]) AS p(patient_id)
CROSS JOIN LATERAL (SELECT t, news2, band, partial FROM news2_scores
                    WHERE patient_id = p.patient_id AND t >= $2
                    ORDER BY t DESC LIMIT 1) s
"""

RECENT_PATIENTS = """
SELECT DISTINCT patient_id FROM readings WHERE t >= $1 ORDER BY patient_id LIMIT $2
"""


async def patients_seen(conn: asyncpg.Connection, since: datetime) -> list[str]:
    return [r["patient_id"] for r in await conn.fetch(RECENT_PATIENTS, since, BOARD_MAX)]


async def board(
    conn: asyncpg.Connection, patients: list[str], alerts: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """One entry per patient, in call-first order."""
    entries: dict[str, dict[str, Any]] = {
        p: {"patient_id": p, "vitals": {}, "news2": None, "alerts": []} for p in patients
    }
    for alert in alerts:
        entries.setdefault(
            alert["patient_id"],
            {"patient_id": alert["patient_id"], "vitals": {}, "news2": None, "alerts": []},
        )["alerts"].append(alert)
    ids = list(entries)
    for r in await conn.fetch(LATEST, ids, list(BOARD_METRICS), now - FRESH_FOR):
        entries[r["patient_id"]]["vitals"][r["metric"]] = {
            "value": r["value"], "unit": r["unit"] or METRICS[r["metric"]].unit,
            "t": r["t"], "age_s": round((now - r["t"]).total_seconds()),
        }  # fmt: skip
    for r in await conn.fetch(NEWS2, ids, now - FRESH_FOR):
        entries[r["patient_id"]]["news2"] = {
            "score": r["news2"], "band": r["band"], "partial": r["partial"], "t": r["t"],
        }  # fmt: skip
    for entry in entries.values():
        ages = [v["age_s"] for v in entry["vitals"].values()]
        entry["last_data_age_s"] = min(ages) if ages else None
    return sorted(entries.values(), key=call_first)


def call_first(entry: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: smaller is more urgent."""
    alerts = entry["alerts"]
    if not alerts:
        age = entry.get("last_data_age_s")
        return (1, -(age if age is not None else float("inf")), entry["patient_id"])
    worst = max(alerts, key=_urgency)
    return (0, *(-x for x in _urgency(worst)), entry["patient_id"])


def _urgency(alert: dict[str, Any]) -> tuple[float, ...]:
    return (
        0 if alert.get("acknowledged_by") else 1,
        _SEVERITY.get(alert["severity"], 0),
        alert.get("escalation_level", 0),
        alert.get("open_s", 0.0),
    )

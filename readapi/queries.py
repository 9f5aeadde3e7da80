"""The read API's SQL, one text per read, and the functions that run them.

Each text runs unchanged on TimescaleDB and plain PostgreSQL (readings_1m and readings_1h
have the same columns on both: vitals/db/migrations/0004), and the storage checks run
them on every engine (tests/support/timescale/checks.py). Paging is a keyset on time with a tie
breaker, never OFFSET: page n costs what page 1 costs, and rows stored while a client pages
cannot shift a page boundary into a gap or a duplicate.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

# $1 patient, $2 metric, [$3, $4) the range, after ($5 t, $6 device), $7 rows.
# The row comparison with the primary key's order (patient_id, metric, t, device_id) keeps
# the scan a range of that index.
RAW = """
SELECT t, value, unit, device_id FROM readings
WHERE patient_id = $1 AND metric = $2 AND t >= $3 AND t < $4 AND (t, device_id) > ($5, $6)
ORDER BY t, device_id
LIMIT $7"""

# A systolic and a diastolic reading of one device at one time: the blood pressure panel
# (the FHIR facade). $1 patient, [$2, $3) the range, after ($4 t, $5 device), $6 rows;
# both sides are ranges of the primary key.
BP_PANELS = """
SELECT s.t, s.device_id, s.value AS systolic, d.value AS diastolic, s.unit FROM readings s
JOIN readings d ON d.patient_id = s.patient_id AND d.metric = 'diastolic_bp' AND d.t = s.t
                   AND d.device_id = s.device_id
WHERE s.patient_id = $1 AND s.metric = 'systolic_bp' AND s.t >= $2 AND s.t < $3
  AND (s.t, s.device_id) > ($4, $5)
ORDER BY s.t, s.device_id
LIMIT $6"""

# Buckets whose start lies in [$3, $4), after $5; $6 rows.
BUCKETS_1M = """
SELECT bucket, min_value, max_value, avg_value, n FROM readings_1m
WHERE patient_id = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4 AND bucket > $5
ORDER BY bucket
LIMIT $6"""
BUCKETS_1H = BUCKETS_1M.replace("readings_1m", "readings_1h")
BUCKETS = {"1m": BUCKETS_1M, "1h": BUCKETS_1H}

# Newest first (the index alerts_patient_at). $1 patient, [$2, $3) on `at`, $4 state or
# NULL, before ($5 at, $6 alert id, $7 state), $8 rows.
ALERTS = """
SELECT alert_id, state, rule, severity, retrospective, suppressed, episode_start, at,
       detected_at, metric, value, device_id, detail
FROM alerts
WHERE patient_id = $1 AND at >= $2 AND at < $3 AND ($4::text IS NULL OR state = $4)
  AND (at, alert_id, state) < ($5, $6, $7)
ORDER BY at DESC, alert_id DESC, state DESC
LIMIT $8"""

# NEWS2 score records (news2_scores, one per score change): the latest at or before $2,
# one probe of the primary key (patient_id, t). parameters as text: the same on every driver.
_SCORE_COLUMNS = (
    "t, news2, band, red, partial, spo2_scale, parameters::text AS parameters, computed_at"
)
NEWS2_LATEST = f"""
SELECT {_SCORE_COLUMNS} FROM news2_scores
WHERE patient_id = $1 AND t <= $2
ORDER BY t DESC
LIMIT 1"""

# A patient's score history, oldest first: t in [$2, $3), after $4; $5 rows.
NEWS2_HISTORY = f"""
SELECT {_SCORE_COLUMNS} FROM news2_scores
WHERE patient_id = $1 AND t >= $2 AND t < $3 AND t > $4
ORDER BY t
LIMIT $5"""


async def raw(
    conn: asyncpg.Connection,
    patient_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str],
    rows: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(RAW, patient_id, metric, start, end, *after, rows)


async def bp_panels(
    conn: asyncpg.Connection,
    patient_id: str,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str],
    rows: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(BP_PANELS, patient_id, start, end, *after, rows)


async def buckets(
    conn: asyncpg.Connection,
    resolution: str,
    patient_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    after: datetime,
    rows: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(BUCKETS[resolution], patient_id, metric, start, end, after, rows)


async def alerts(
    conn: asyncpg.Connection,
    patient_id: str,
    start: datetime,
    end: datetime,
    state: str | None,
    before: tuple[datetime, str, str],
    rows: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(ALERTS, patient_id, start, end, state, *before, rows)


async def news2_latest(
    conn: asyncpg.Connection, patient_id: str, at: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(NEWS2_LATEST, patient_id, at)


async def news2_history(
    conn: asyncpg.Connection,
    patient_id: str,
    start: datetime,
    end: datetime,
    after: datetime,
    rows: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(NEWS2_HISTORY, patient_id, start, end, after, rows)

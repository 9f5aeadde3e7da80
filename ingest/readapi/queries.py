"""The read API's SQL, one text per read, and the functions that run them.

Each text runs unchanged on TimescaleDB and plain PostgreSQL (readings_1m and readings_1h
have the same columns on both: sinks/timescale/migrations/0004), and the storage checks run
them on every engine (tests/timescale/checks.py). Paging is a keyset on time with a tie
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
SELECT alert_id, state, rule, severity, retrospective, episode_start, at, detected_at,
       metric, value, device_id, detail
FROM alerts
WHERE patient_id = $1 AND at >= $2 AND at < $3 AND ($4::text IS NULL OR state = $4)
  AND (at, alert_id, state) < ($5, $6, $7)
ORDER BY at DESC, alert_id DESC, state DESC
LIMIT $8"""

# The latest reading at or before $3 of each metric in $2: one short index probe each.
LATEST = """
SELECT p.metric, r.t, r.value
FROM unnest($2::text[]) AS p(metric)
CROSS JOIN LATERAL (
    SELECT t, value FROM readings
    WHERE patient_id = $1 AND metric = p.metric AND t <= $3
    ORDER BY t DESC
    LIMIT 1
) r"""


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


async def latest(
    conn: asyncpg.Connection, patient_id: str, metrics: tuple[str, ...], at: datetime
) -> list[asyncpg.Record]:
    return await conn.fetch(LATEST, patient_id, list(metrics), at)

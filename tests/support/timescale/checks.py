"""Storage checks shared by every engine: TimescaleDB in WASM, a TimescaleDB server
(testcontainers) and plain PostgreSQL. Each takes a migrated, otherwise empty database.

Readings go in through the sink's own statements (sinks/timescale/writer.py), alerts
through the alerts sink's (sinks/alerts/store.py). Only COPY is replaced, by an INSERT into
the same staging table: COPY is a protocol feature the WASM engine cannot serve.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from readapi import burden, history, queries
from readapi.params import EARLIEST, LATEST
from sinks.alerts import store
from sinks.timescale import scores, writer
from sinks.timescale.rows import COLUMNS, rows_of
from tests.support.timescale.databases import Database, Row, values
from vitals import contract
from vitals.db.migrate import Migration
from vitals.db.pgtime import to_ms

# The read queries of docs/storage.md: one patient's series of one metric, per minute or
# per hour, over [from, to). The same text runs on TimescaleDB and plain PostgreSQL.
SERIES_1M = """
SELECT bucket, min_value, max_value, avg_value, n FROM readings_1m
WHERE patient_id = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4
ORDER BY bucket"""
SERIES_1H = SERIES_1M.replace("readings_1m", "readings_1h")
# What `vitals dev` prints as rows stored (vitalsctl/dev.py).
ROWS_STORED = "SELECT count(*) AS n FROM readings"

# Stands in for the sink's COPY into its staging table.
_FILL_STAGING = (
    f"INSERT INTO {writer.STAGING} ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    "$1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::float8[], $6::text[], "
    "$7::uuid[], $8::timestamptz[])"
)
_SERIES = ("bucket", "min_value", "max_value", "avg_value", "n")
_POLICY_JOBS = """
SELECT j.job_id, coalesce(c.view_name, j.hypertable_name) AS relation, j.proc_name,
       j.schedule_interval::text AS every, j.scheduled,
       j.config->>'compress_after' AS compress_after, j.config->>'drop_after' AS drop_after,
       j.config->>'start_offset' AS start_offset, j.config->>'end_offset' AS end_offset
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.continuous_aggregates c
       ON j.hypertable_name IN (c.view_name, c.materialization_hypertable_name)
WHERE j.proc_name IN
      ('policy_compression', 'policy_retention', 'policy_refresh_continuous_aggregate')
ORDER BY relation, j.proc_name"""
SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
# Older than the default retention of readings and scores (2922 days, vitals/settings.py).
PAST_RETENTION_DAYS = 3000


# --- helpers -----------------------------------------------------------------------------


async def apply(db: Database, migrations: Sequence[Migration]) -> list[str]:
    """Each file in its own transaction, as vitals/db/migrate.py applies them."""
    for m in migrations:
        async with db.transaction():
            await db.script(m.sql())
    return [m.name for m in migrations]


_UNITS = {"heart_rate": "/min", "spo2": "%", "systolic_bp": "mm[Hg]", "diastolic_bp": "mm[Hg]"}


def upload(
    patient: str, metric: str, readings: Sequence[tuple[datetime, float]], device: str = "w1"
) -> contract.Upload:
    return contract.Upload(
        upload_id=str(uuid.uuid4()),
        gateway_id="gw-test",
        device_id=device,
        patient_id=patient,
        received=to_ms(readings[-1][0]) + 60_000,
        readings=tuple(contract.Reading(metric, to_ms(t), v, _UNITS[metric]) for t, v in readings),
    )


async def store_readings(db: Database, up: contract.Upload) -> int:
    """The sink's write of one upload (writer.copy_then_upsert, conflicts recorded);
    returns the new rows."""
    firsts, later = writer.first_of_each_key(rows_of(up))
    async with db.transaction():
        await db.script(writer.CREATE_STAGING)
        await db.execute(_FILL_STAGING, *(list(c) for c in zip(*firsts, strict=True)))
        new = await db.execute(writer.UPSERT)
        if later:
            await db.execute(_FILL_STAGING, *(list(c) for c in zip(*later, strict=True)))
        await db.fetch(writer.RECORD_CONFLICTS)
        return new


async def conflicts(db: Database, patient: str) -> list[tuple[Any, ...]]:
    """(t, stored value, conflicting value) of the patient's recorded conflicts."""
    rows = await db.fetch(
        "SELECT t, stored_value, conflicting_value FROM reading_conflicts"
        " WHERE patient_id = $1 ORDER BY t, conflicting_value",
        patient,
    )
    return values(rows, "t", "stored_value", "conflicting_value")


async def hour_ago(db: Database, hours: int) -> datetime:
    """The start of the hour `hours` before the engine's clock: a whole, past bucket."""
    rows = await db.fetch(
        "SELECT date_trunc('hour', now()) - make_interval(hours => $1::int) AS at", hours
    )
    return rows[0]["at"]


async def series(
    db: Database, query: str, patient: str, metric: str, start: datetime
) -> list[tuple[Any, ...]]:
    """Two hours of one series from `start`, as (bucket, min, max, avg, n) tuples."""
    rows = await db.fetch(query, patient, metric, start, start + 2 * HOUR)
    return values(rows, *_SERIES)


async def policy_jobs(db: Database) -> list[Row]:
    return await db.fetch(_POLICY_JOBS)


async def hold_jobs(db: Database) -> None:
    """Unschedule the policies so only the test runs them (a server's background workers
    would otherwise refresh or compress in the middle of a check)."""
    for job in await policy_jobs(db):
        await db.fetch("SELECT alter_job($1, scheduled => false)", job["job_id"])


async def run_job(db: Database, relation: str, proc_name: str) -> None:
    (job,) = [
        j for j in await policy_jobs(db) if (j["relation"], j["proc_name"]) == (relation, proc_name)
    ]
    await db.script(f"CALL run_job({int(job['job_id'])})")


async def refresh(db: Database, view: str) -> None:
    # Whole range: fine on a test database, wrong on one whose raw chunks were dropped
    # (see docs/storage.md, "Retention"): it would delete their aggregates.
    await db.script(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")


# --- schema ------------------------------------------------------------------------------


async def check_timescale_schema(db: Database) -> None:
    """Hypertable, chunk interval, compression, policies and continuous aggregates."""
    hypertables = await db.fetch(
        """SELECT hypertable_name, primary_dimension, compression_enabled
           FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'
           ORDER BY hypertable_name"""
    )
    assert values(hypertables, "hypertable_name", "primary_dimension", "compression_enabled") == [
        ("alerts", "episode_start", True),
        ("news2_scores", "t", True),
        ("readings", "t", True),
    ]
    chunks = await db.fetch(
        """SELECT hypertable_name, time_interval::text AS every
           FROM timescaledb_information.dimensions
           WHERE hypertable_schema = 'public' ORDER BY hypertable_name"""
    )
    assert values(chunks, "hypertable_name", "every") == [
        ("alerts", "30 days"),
        ("news2_scores", "7 days"),
        ("readings", "1 day"),
    ]
    compression = await db.fetch(
        """SELECT hypertable::text AS hypertable, segmentby, orderby
           FROM timescaledb_information.hypertable_columnstore_settings
           WHERE hypertable::text NOT LIKE '\\_timescaledb\\_internal.%' ORDER BY 1"""
    )
    assert values(compression, "hypertable", "segmentby", "orderby") == [
        ("alerts", "patient_id", "episode_start DESC,alert_id,state"),
        ("news2_scores", "patient_id", "t DESC"),
        ("readings", "patient_id,metric", "t DESC,device_id"),
    ]
    aggregates = await db.fetch(
        """SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates
           WHERE hypertable_name = 'readings' ORDER BY view_name"""
    )
    # Both real-time (0013): the newest minutes are read from raw rows (issue 14).
    assert values(aggregates, "view_name", "materialized_only") == [
        ("readings_1h", False),
        ("readings_1m", False),
    ]
    jobs = await policy_jobs(db)
    # No retention on alerts: clinical records (docs/storage.md).
    assert values(jobs, "relation", "proc_name", "scheduled", "compress_after", "drop_after") == [
        ("alerts", "policy_compression", True, "90 days", None),
        ("news2_scores", "policy_compression", True, "7 days", None),
        ("news2_scores", "policy_retention", True, None, "2922 days"),
        ("readings", "policy_compression", True, "7 days", None),
        ("readings", "policy_retention", True, None, "2922 days"),
        ("readings_1h", "policy_refresh_continuous_aggregate", True, None, None),
        ("readings_1m", "policy_refresh_continuous_aggregate", True, None, None),
    ]
    assert values(jobs[5:], "every", "start_offset", "end_offset") == [
        ("00:30:00", "30 days", "01:00:00"),
        ("00:01:00", "7 days", "00:01:00"),
    ]
    # A refresh over dropped raw chunks would delete their aggregates: every refresh window
    # must end its reach well inside the raw retention.
    (guard,) = await db.fetch(
        """SELECT max((config->>'start_offset')::interval) AS reach,
                  min((config->>'drop_after')::interval) AS kept
           FROM timescaledb_information.jobs
           WHERE proc_name IN ('policy_refresh_continuous_aggregate', 'policy_retention')"""
    )
    assert guard["reach"] is not None and guard["kept"] is not None
    assert _days(guard["reach"]) * 2 < _days(guard["kept"]), guard


async def check_plain_schema(db: Database) -> None:
    """Plain views stand in for the continuous aggregates (reader_keys, 0008,
    reader_key_scopes, 0010, and fhir_dead_letters, 0017, are no rollups)."""
    views = await db.fetch(
        "SELECT viewname FROM pg_views WHERE schemaname = 'public'"
        " AND viewname NOT IN ('reader_keys', 'reader_key_scopes', 'fhir_dead_letters')"
        " ORDER BY 1"
    )
    assert values(views, "viewname") == [("readings_1h",), ("readings_1m",)]


def _days(interval: object) -> float:
    # asyncpg gives a timedelta, the WASM engine the text form ("30 days").
    if isinstance(interval, timedelta):
        return interval / DAY
    number, unit = str(interval).split()
    assert unit == "days", interval
    return float(number)


async def check_rollup_columns(db: Database) -> None:
    """readings_1m and readings_1h have the same columns on every engine."""
    columns = await db.fetch(
        """SELECT table_name, column_name, data_type FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name IN ('readings_1m', 'readings_1h')
           ORDER BY table_name, ordinal_position"""
    )
    expected = [
        ("bucket", "timestamp with time zone"),
        ("patient_id", "text"),
        ("metric", "text"),
        ("min_value", "double precision"),
        ("max_value", "double precision"),
        ("avg_value", "double precision"),
        ("n", "bigint"),
    ]
    assert values(columns, "table_name", "column_name", "data_type") == [
        (view, *column) for view in ("readings_1h", "readings_1m") for column in expected
    ]


# --- the sinks' statements ---------------------------------------------------------------


async def check_readings_stored_once(db: Database) -> None:
    """Retried uploads add nothing; the first write of a key wins; the device is in the key."""
    t0 = await hour_ago(db, 3)
    first = upload("p-sink", "heart_rate", [(t0, 60.0), (t0 + MINUTE, 61.0)])
    retry = upload(
        "p-sink", "heart_rate", [(t0, 99.0), (t0 + MINUTE, 99.0), (t0 + 2 * MINUTE, 62.0)]
    )
    other_device = upload("p-sink", "heart_rate", [(t0, 70.0)], device="w2")

    assert await store_readings(db, first) == 2
    assert await store_readings(db, first) == 0
    assert await store_readings(db, retry) == 1
    assert await store_readings(db, other_device) == 1

    assert await db.fetch(ROWS_STORED) == [{"n": 4}]
    stored = await db.fetch(
        "SELECT t, device_id, value, upload_id FROM readings WHERE patient_id = $1"
        " ORDER BY t, device_id",
        "p-sink",
    )
    assert values(stored, "t", "device_id", "value") == [
        (t0, "w1", 60.0),
        (t0, "w2", 70.0),
        (t0 + MINUTE, "w1", 61.0),
        (t0 + 2 * MINUTE, "w1", 62.0),
    ]
    assert stored[0]["upload_id"] == uuid.UUID(first.upload_id)
    # The retry's other values are recorded as conflicts (0012), once however often sent.
    assert await store_readings(db, retry) == 0
    assert await conflicts(db, "p-sink") == [(t0, 60.0, 99.0), (t0 + MINUTE, 61.0, 99.0)]


async def check_alert_statements(db: Database) -> None:
    """Store each (alert_id, state) once, list the unpublished in order, mark them published."""
    start = to_ms(await hour_ago(db, 2))
    alert_id = contract.alert_id("p-alert", "spo2_low", start)
    common = dict(
        alert_id=alert_id, patient_id="p-alert", rule="spo2_low", severity="high",
        episode_start=start, retrospective=False, metric="spo2", device_id="w1",
    )  # fmt: skip
    opened = contract.Detection(**common, state="opened", at=start, detected=start + 5, value=88.0)
    resolved = contract.Detection(
        **common, state="resolved", at=start + 600_000, detected=start + 600_005, value=93.0
    )
    rows = [store.row_of(resolved), store.row_of(opened)]
    arrays = [list(c) for c in zip(*rows, strict=True)]
    keys = store.key_params(store.keys_of(rows))

    assert await db.execute(store.STORE, *arrays) == 2
    assert await db.execute(store.STORE, *arrays) == 0
    pending = await db.fetch(store.UNPUBLISHED, *keys)
    assert values(pending, "alert_id", "state", "value") == [
        (uuid.UUID(alert_id), "opened", 88.0),
        (uuid.UUID(alert_id), "resolved", 93.0),
    ]
    assert await db.execute(store.MARK, *keys, await hour_ago(db, 0)) == 2
    assert await db.execute(store.MARK, *keys, await hour_ago(db, 0)) == 0
    assert await db.fetch(store.UNPUBLISHED, *keys) == []


async def check_alert_key_and_grants(db: Database) -> None:
    """alerts' key holds the hypertable's time (0006) on every engine; the roles of 0005 can
    still use alerts, and use news2_scores (0007) and reading_conflicts (0012) as their
    process needs."""
    (key,) = await db.fetch(
        """SELECT array_to_string(array_agg(a.attname::text ORDER BY k.ord), ',') AS columns
           FROM pg_constraint c
           CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
           WHERE c.conrelid = 'alerts'::regclass AND c.contype = 'p'"""
    )
    assert key["columns"] == "alert_id,state,episode_start"
    grants = await db.fetch(
        """SELECT r.role, t.name, p.privilege,
                  has_table_privilege(r.role, t.name, p.privilege) AS granted
           FROM unnest(ARRAY['vitals_sink', 'vitals_reader']) AS r(role)
           CROSS JOIN unnest(ARRAY['alerts', 'news2_scores', 'reading_conflicts']) AS t(name)
           CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) AS p(privilege)
           ORDER BY 1, 2, 3"""
    )
    granted = {(g["role"], g["name"], g["privilege"]) for g in grants if g["granted"]}
    assert granted == {
        ("vitals_reader", "alerts", "SELECT"),
        ("vitals_reader", "news2_scores", "SELECT"),
        ("vitals_reader", "reading_conflicts", "SELECT"),
        ("vitals_sink", "reading_conflicts", "SELECT"),
        ("vitals_sink", "reading_conflicts", "INSERT"),
        *(
            ("vitals_sink", t, p)
            for t in ("alerts", "news2_scores")
            for p in ("SELECT", "INSERT", "UPDATE")
        ),
    }


# The alerts sink's statement before migration 0006 (key (alert_id, state)).
# The alerts sink's statement as released with 0001-0005, frozen here: 13 columns (no
# `suppressed`, 0009) and the old conflict target.
_STORE_BEFORE_0006 = """
INSERT INTO alerts (alert_id, state, patient_id, rule, severity, retrospective,
                    episode_start, at, detected_at, metric, value, device_id, detail)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::boolean[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                     $10::text[], $11::float8[], $12::text[], $13::text[])
ON CONFLICT (alert_id, state) DO NOTHING
"""


def _old_columns(rows: list[store.AlertRow]) -> list[list]:
    """The rows' columns as the previous release's statement takes them."""
    return [list(c) for c in zip(*rows, strict=True)][:13]


def _episode(patient: str, start: datetime, *states: str) -> list[store.AlertRow]:
    ms = to_ms(start)
    return [
        store.row_of(
            contract.Detection(
                alert_id=contract.alert_id(patient, "spo2_low", ms), patient_id=patient,
                rule="spo2_low", state=state, severity="high", episode_start=ms,
                at=ms + (600_000 if state == "resolved" else 0), detected=ms + 1_000,
                retrospective=False, metric="spo2", value=88.0, device_id="w1",
            )
        )
        for state in states
    ]  # fmt: skip


async def store_alerts_before_0006(db: Database) -> list[store.AlertRow]:
    """Alerts as a database migrated up to 0005 held them: written, one published."""
    rows = _episode("p-up", await hour_ago(db, 24 * 45), "opened", "resolved") + _episode(
        "p-up", await hour_ago(db, 2), "opened"
    )
    assert await db.execute(_STORE_BEFORE_0006, *_old_columns(rows)) == 3
    keys = store.key_params(store.keys_of(rows[:2]))
    assert await db.execute(store.MARK, *keys, await hour_ago(db, 0)) == 2
    return rows


async def check_alerts_after_upgrade(db: Database, rows: list[store.AlertRow]) -> None:
    """The rows stored before 0006 are all there, published or not as before; the sink's
    new statement finds them stored; on TimescaleDB they sit in the hypertable's chunks."""
    kept = await db.fetch(
        "SELECT alert_id, state, episode_start, published_at IS NOT NULL AS published"
        " FROM alerts ORDER BY episode_start, state"
    )
    assert values(kept, "alert_id", "state", "episode_start", "published") == [
        (r[0], r[1], r[6], i < 2) for i, r in enumerate(rows)
    ]
    columns = [list(c) for c in zip(*rows, strict=True)]
    assert await db.execute(store.STORE, *columns) == 0
    if not db.timescale:  # the previous release's statement still runs (rolling upgrade)
        assert await db.execute(_STORE_BEFORE_0006, *_old_columns(rows)) == 0
    else:  # no index of a hypertable can serve it: stop that sink before 0006 (storage.md)
        try:
            await db.execute(_STORE_BEFORE_0006, *_old_columns(rows))
        except Exception as exc:  # asyncpg's or the WASM engine's error: the same text
            assert "no unique or exclusion constraint matching" in str(exc), exc
        else:
            raise AssertionError("the pre-0006 statement ran on the alerts hypertable")
    await check_alert_key_and_grants(db)
    if db.timescale:
        chunks = await db.fetch(
            """SELECT count(*) AS n FROM timescaledb_information.chunks
               WHERE hypertable_name = 'alerts'"""
        )
        assert chunks[0]["n"] >= 2  # 45 days apart: two 30-day chunks at least
        only = await db.fetch("SELECT count(*) AS n FROM ONLY alerts")
        assert only == [{"n": 0}]  # migrate_data moved every row into chunks


async def check_alerts_in_compressed_chunks(db: Database) -> None:
    """An episode opened long ago, its chunk compressed: the resolution is stored once,
    listed, and marked published (an UPDATE) in the compressed chunk."""
    await hold_jobs(db)
    start = await hour_ago(db, 24 * 200)
    opened, resolved = _episode("p-old", start, "opened", "resolved")
    await db.execute(store.STORE, *(list(c) for c in zip(opened, strict=True)))

    await run_job(db, "alerts", "policy_compression")

    chunks = await db.fetch(
        """SELECT is_compressed FROM timescaledb_information.chunks
           WHERE hypertable_name = 'alerts' AND range_start <= $1 AND $1 < range_end""",
        start,
    )
    assert chunks == [{"is_compressed": True}]
    both = [list(c) for c in zip(opened, resolved, strict=True)]
    assert await db.execute(store.STORE, *both) == 1
    assert await db.execute(store.STORE, *both) == 0
    keys = store.key_params(store.keys_of([opened, resolved]))
    pending = await db.fetch(store.UNPUBLISHED, *keys)
    assert values(pending, "state") == [("opened",), ("resolved",)]
    assert await db.execute(store.MARK, *keys, await hour_ago(db, 0)) == 2
    assert await db.fetch(store.UNPUBLISHED, *keys) == []


async def check_news2_scores_in_compressed_chunks(db: Database) -> None:
    """A score re-computed for a compressed chunk replaces the stored one there."""
    await hold_jobs(db)
    t = await hour_ago(db, 24 * 30)
    computed = t + HOUR
    assert await store_scores(db, [news2_score("p-cold", t, 3, computed, heart_rate=3)]) == 1

    await run_job(db, "news2_scores", "policy_compression")

    chunks = await db.fetch(
        """SELECT is_compressed FROM timescaledb_information.chunks
           WHERE hypertable_name = 'news2_scores' AND range_start <= $1 AND $1 < range_end""",
        t,
    )
    assert chunks == [{"is_compressed": True}]
    later = news2_score("p-cold", t, 5, computed + MINUTE, heart_rate=3, spo2=2)
    assert await store_scores(db, [later]) == 1
    (row,) = await db.fetch(queries.NEWS2_LATEST, "p-cold", t)
    assert (row["news2"], row["computed_at"]) == (5, computed + MINUTE)


# --- NEWS2 scores (sinks/timescale/scores.py, the read API's score queries) ---------------


def news2_score(
    patient: str, t: datetime, total: int, computed: datetime, **points: int
) -> contract.News2Score:
    return contract.News2Score(
        patient_id=patient,
        t=to_ms(t),
        news2=total,
        band="high" if total >= 7 else "medium" if total >= 5 else "low" if total else "zero",
        red=3 in points.values(),
        partial=len(points) < 7,
        scale=1,
        parameters={
            name: contract.ScoredParameter(n, 100.0 + n, 60_000) for name, n in points.items()
        },
        computed=to_ms(computed),
    )


async def store_scores(db: Database, records: Sequence[contract.News2Score]) -> int:
    """The timescale sink's write of score records (scores.upsert_scores)."""
    rows = scores.last_per_key([scores.score_row(r) for r in records])
    return await db.execute(scores.UPSERT, *(list(c) for c in zip(*rows, strict=True)))


async def check_news2_scores(db: Database) -> None:
    """Scores are stored once per (patient, t); a later computation replaces one, an older
    one does not; the read API finds the latest at a moment and pages the history."""
    b = await hour_ago(db, 3)
    computed = b + HOUR
    first = [
        news2_score("p-n2", b, 2, computed, heart_rate=2, spo2=0),
        news2_score("p-n2", b + 10 * MINUTE, 5, computed, heart_rate=3, spo2=2),
        news2_score("p-n2", b + 20 * MINUTE, 7, computed, heart_rate=3, spo2=3, resp_rate=1),
        news2_score("p-other", b + 5 * MINUTE, 1, computed, heart_rate=1, spo2=0),
    ]
    assert await store_scores(db, first) == 4
    assert await store_scores(db, first) == 4  # redelivered: the same values again
    assert await db.fetch("SELECT count(*) AS n FROM news2_scores") == [{"n": 4}]
    # Late data re-scored 10 minutes in (twice in one batch: the last one counts); a
    # stale computation of 20 minutes in (older computed_at) changes nothing.
    recomputed = [
        news2_score("p-n2", b + 10 * MINUTE, 4, computed + MINUTE, heart_rate=3, spo2=1),
        news2_score("p-n2", b + 10 * MINUTE, 6, computed + MINUTE, heart_rate=3, spo2=3),
        news2_score("p-n2", b + 20 * MINUTE, 0, computed - MINUTE, heart_rate=0, spo2=0),
    ]
    assert await store_scores(db, recomputed) == 1

    (at_15,) = await db.fetch(queries.NEWS2_LATEST, "p-n2", b + 15 * MINUTE)
    assert (at_15["t"], at_15["news2"], at_15["band"], at_15["partial"]) == (
        b + 10 * MINUTE, 6, "medium", True,
    )  # fmt: skip
    assert at_15["computed_at"] == computed + MINUTE and at_15["red"] is True
    assert json.loads(at_15["parameters"]) == {
        "heart_rate": {"points": 3, "value": 103.0, "age_ms": 60_000},
        "spo2": {"points": 3, "value": 103.0, "age_ms": 60_000},
    }
    (now,) = await db.fetch(queries.NEWS2_LATEST, "p-n2", b + DAY)
    assert (now["t"], now["news2"]) == (b + 20 * MINUTE, 7)
    assert await db.fetch(queries.NEWS2_LATEST, "p-n2", b - SECOND) == []

    history: list[tuple[Any, ...]] = []
    after = EARLIEST
    while True:  # oldest first, two a page, strictly after the last t
        page = await db.fetch(queries.NEWS2_HISTORY, "p-n2", b, b + HOUR, after, 2)
        history += values(page, "t", "news2")
        if len(page) < 2:
            break
        after = page[-1]["t"]
    assert history == [(b, 2), (b + 10 * MINUTE, 6), (b + 20 * MINUTE, 7)]
    window = await db.fetch(
        queries.NEWS2_HISTORY, "p-n2", b + MINUTE, b + 20 * MINUTE, EARLIEST, 10
    )
    assert values(window, "t") == [(b + 10 * MINUTE,)]


# --- rollups -----------------------------------------------------------------------------


async def check_rollups(db: Database) -> None:
    """Per-minute and per-hour min, max, avg and count per patient and metric, through the
    documented read queries; on TimescaleDB also what is visible before a refresh."""
    if db.timescale:
        await hold_jobs(db)
    b = await hour_ago(db, 2)
    await store_readings(
        db,
        upload("p-roll", "heart_rate", [(b, 60.0), (b + 20 * SECOND, 70.0), (b + 40 * SECOND, 80.0),
                                        (b + MINUTE, 90.0), (b + HOUR, 40.0)]),
    )  # fmt: skip
    await store_readings(
        db, upload("p-roll", "heart_rate", [(b + 30 * SECOND, 100.0)], device="w2")
    )
    await store_readings(db, upload("p-roll", "spo2", [(b, 97.0)]))
    await store_readings(db, upload("p-other", "heart_rate", [(b, 50.0)]))

    per_minute = [
        (b, 60.0, 100.0, 77.5, 4),
        (b + MINUTE, 90.0, 90.0, 90.0, 1),
        (b + HOUR, 40.0, 40.0, 40.0, 1),
    ]
    if db.timescale:
        # Not refreshed yet: both views (real-time) answer from raw readings. Materialized
        # only, the minute view showed none of it (issue 14, bug 1).
        assert await series(db, SERIES_1M, "p-roll", "heart_rate", b) == per_minute
        assert (await series(db, SERIES_1H, "p-roll", "heart_rate", b))[-1][:2] == (b + HOUR, 40.0)
        await refresh(db, "readings_1m")
        await refresh(db, "readings_1h")

    assert await series(db, SERIES_1M, "p-roll", "heart_rate", b) == per_minute
    assert await series(db, SERIES_1H, "p-roll", "heart_rate", b) == [
        (b, 60.0, 100.0, 80.0, 5),
        (b + HOUR, 40.0, 40.0, 40.0, 1),
    ]
    assert await series(db, SERIES_1H, "p-roll", "spo2", b) == [(b, 97.0, 97.0, 97.0, 1)]
    assert await series(db, SERIES_1M, "p-other", "heart_rate", b) == [(b, 50.0, 50.0, 50.0, 1)]

    # A late reading in an hour already materialized shows after the next refresh.
    await store_readings(db, upload("p-roll", "heart_rate", [(b + 59 * MINUTE, 20.0)]))
    if db.timescale:
        assert (await series(db, SERIES_1H, "p-roll", "heart_rate", b))[0][-1] == 5
        await refresh(db, "readings_1h")
    assert (await series(db, SERIES_1H, "p-roll", "heart_rate", b))[0] == (b, 20.0, 100.0, 70.0, 6)


# --- TimescaleDB policies at work --------------------------------------------------------


async def check_retention_keeps_rollups(db: Database) -> None:
    """The retention job drops raw chunks past the retention (8 years by default); the
    aggregates of those days stay, also after the refresh policies run again."""
    await hold_jobs(db)
    old, recent = await hour_ago(db, PAST_RETENTION_DAYS * 24), await hour_ago(db, 2)
    await store_readings(
        db, upload("p-old", "heart_rate", [(old, 60.0), (old + 10 * MINUTE, 62.0)])
    )
    await store_readings(db, upload("p-new", "heart_rate", [(recent, 70.0)]))
    await refresh(db, "readings_1m")
    await refresh(db, "readings_1h")

    await run_job(db, "readings", "policy_retention")

    raw = await db.fetch("SELECT patient_id, count(*) AS n FROM readings GROUP BY 1")
    assert values(raw, "patient_id", "n") == [("p-new", 1)]
    await run_job(db, "readings_1m", "policy_refresh_continuous_aggregate")
    await run_job(db, "readings_1h", "policy_refresh_continuous_aggregate")
    assert await series(db, SERIES_1H, "p-old", "heart_rate", old) == [(old, 60.0, 62.0, 61.0, 2)]
    assert await series(db, SERIES_1M, "p-old", "heart_rate", old) == [
        (old, 60.0, 60.0, 60.0, 1),
        (old + 10 * MINUTE, 62.0, 62.0, 62.0, 1),
    ]
    assert await series(db, SERIES_1H, "p-new", "heart_rate", recent) == [
        (recent, 70.0, 70.0, 70.0, 1)
    ]


_SIGN = """
INSERT INTO alert_lifecycle (alert_id, state, level, patient_id, episode_start, at,
                             actor_key_id, actor, outcome, note)
VALUES ($1, $2, 0, $3, $4, $4, 'k-nurse', 'nurse', $5, $6)
"""


async def check_retention_spares_what_clinicians_signed(
    db: Database, expire: Callable[[], Awaitable[object]]
) -> None:
    """`expire` (the engine's retention job, or `vitals db prune`) drops readings and scores
    past their retention; an alert of the same age, its acknowledgement and the outcome a
    nurse recorded all stay, as do the recent readings."""
    if db.timescale:
        await hold_jobs(db)
    old, recent = await hour_ago(db, PAST_RETENTION_DAYS * 24), await hour_ago(db, 2)
    await store_readings(db, upload("p-signed", "spo2", [(old, 88.0), (recent, 97.0)]))
    await store_scores(db, [news2_score("p-signed", t, 3, t, spo2=3) for t in (old, recent)])
    episode = _episode("p-signed", old, "opened", "resolved")
    await db.execute(store.STORE, *(list(c) for c in zip(*episode, strict=True)))
    alert = contract.alert_id("p-signed", "spo2_low", to_ms(old))
    await db.execute(_SIGN, uuid.UUID(alert), "acknowledged", "p-signed", old, None, None)
    await db.execute(
        _SIGN, uuid.UUID(alert), "outcome", "p-signed", old, "advised", "rang, sensor re-seated"
    )

    await expire()

    readings = await db.fetch("SELECT t FROM readings WHERE patient_id = 'p-signed'")
    assert values(readings, "t") == [(recent,)]
    kept_scores = await db.fetch("SELECT t FROM news2_scores WHERE patient_id = 'p-signed'")
    assert values(kept_scores, "t") == [(recent,)]
    alerts = await db.fetch("SELECT state FROM alerts WHERE patient_id = 'p-signed' ORDER BY 1")
    assert values(alerts, "state") == [("opened",), ("resolved",)]
    signed = await db.fetch(
        "SELECT state, outcome, note FROM alert_lifecycle WHERE patient_id = 'p-signed'"
        " ORDER BY state"
    )
    assert values(signed, "state", "outcome", "note") == [
        ("acknowledged", None, None),
        ("outcome", "advised", "rang, sensor re-seated"),
    ]


async def check_late_upload_into_compressed_chunk(db: Database) -> None:
    """A backlog for a chunk the compression job already compressed is stored once, and the
    hourly refresh policy (30-day window) picks it up."""
    await hold_jobs(db)
    c = await hour_ago(db, 10 * 24)
    await store_readings(db, upload("p-late", "heart_rate", [(c, 70.0), (c + MINUTE, 71.0)]))

    await run_job(db, "readings", "policy_compression")

    chunks = await db.fetch(
        """SELECT is_compressed FROM timescaledb_information.chunks
           WHERE hypertable_name = 'readings' AND range_start <= $1 AND $1 < range_end""",
        c,
    )
    assert chunks == [{"is_compressed": True}]
    backlog = upload(
        "p-late", "heart_rate", [(c, 99.0), (c + MINUTE, 99.0), (c + 2 * MINUTE, 72.0)]
    )
    assert await store_readings(db, backlog) == 1
    assert await store_readings(db, backlog) == 0
    # Its other values are compared with the compressed rows and recorded as conflicts.
    assert await conflicts(db, "p-late") == [(c, 70.0, 99.0), (c + MINUTE, 71.0, 99.0)]
    await run_job(db, "readings_1h", "policy_refresh_continuous_aggregate")
    assert await series(db, SERIES_1H, "p-late", "heart_rate", c) == [(c, 70.0, 72.0, 71.0, 3)]


# --- the read API's queries (readapi/queries.py) ------------------------------------


async def check_read_api_queries(db: Database) -> None:
    """Every query the read API issues, with its keyset paging. On TimescaleDB the hourly
    range spans a materialized bucket and buckets only real-time aggregation answers."""
    if db.timescale:
        await hold_jobs(db)
    b = await hour_ago(db, 3)
    await store_readings(db, upload("p-api", "heart_rate", [(b, 60.0), (b + 10 * MINUTE, 80.0)]))
    await store_readings(db, upload("p-api", "heart_rate", [(b, 61.0)], device="w0"))
    if db.timescale:  # materialize the first hour only
        await db.script(
            f"CALL refresh_continuous_aggregate('readings_1h', '{b.isoformat()}',"
            f" '{(b + HOUR).isoformat()}')"
        )
        await refresh(db, "readings_1m")
    await store_readings(
        db, upload("p-api", "heart_rate", [(b + HOUR + 5 * MINUTE, 90.0), (b + 2 * HOUR, 50.0)])
    )
    await store_readings(db, upload("p-api", "spo2", [(b + 5 * MINUTE, 95.0)]))

    hours = await db.fetch(queries.BUCKETS_1H, "p-api", "heart_rate", b, b + 3 * HOUR, EARLIEST, 10)
    assert values(hours, *_SERIES) == [
        (b, 60.0, 80.0, 67.0, 3),  # materialized (TimescaleDB)
        (b + HOUR, 90.0, 90.0, 90.0, 1),  # real-time, from raw rows
        (b + 2 * HOUR, 50.0, 50.0, 50.0, 1),
    ]
    page = await db.fetch(queries.BUCKETS_1H, "p-api", "heart_rate", b, b + 3 * HOUR, b, 1)
    assert values(page, "bucket") == [(b + HOUR,)]
    minutes = await db.fetch(queries.BUCKETS_1M, "p-api", "heart_rate", b, b + HOUR, EARLIEST, 10)
    assert values(minutes, "bucket", "n") == [(b, 2), (b + 10 * MINUTE, 1)]

    raw: list[tuple[Any, ...]] = []
    after: tuple[datetime, str] = (EARLIEST, "")
    while True:  # two rows a page, strictly after the last (t, device) seen
        rows = await db.fetch(queries.RAW, "p-api", "heart_rate", b, b + 3 * HOUR, *after, 2)
        raw += values(rows, "t", "device_id", "value", "unit")
        if len(rows) < 2:
            break
        after = (rows[-1]["t"], rows[-1]["device_id"])
    assert raw == [
        (b, "w0", 61.0, "/min"), (b, "w1", 60.0, "/min"), (b + 10 * MINUTE, "w1", 80.0, "/min"),
        (b + HOUR + 5 * MINUTE, "w1", 90.0, "/min"), (b + 2 * HOUR, "w1", 50.0, "/min"),
    ]  # fmt: skip

    # The FHIR facade's blood pressure panel: a systolic with its diastolic (same time and
    # device), paged after (t, device); a lone systolic is no panel.
    await store_readings(db, upload("p-api", "systolic_bp", [(b, 120.0), (b + MINUTE, 130.0)]))
    await store_readings(db, upload("p-api", "diastolic_bp", [(b, 80.0), (b + MINUTE, 85.0)]))
    await store_readings(db, upload("p-api", "systolic_bp", [(b + 2 * MINUTE, 140.0)]))
    panels = await db.fetch(queries.BP_PANELS, "p-api", b, b + HOUR, EARLIEST, "", 10)
    assert values(panels, "t", "device_id", "systolic", "diastolic", "unit") == [
        (b, "w1", 120.0, 80.0, "mm[Hg]"), (b + MINUTE, "w1", 130.0, 85.0, "mm[Hg]"),
    ]  # fmt: skip
    after_first = await db.fetch(queries.BP_PANELS, "p-api", b, b + HOUR, b, "w1", 10)
    assert values(after_first, "t") == [(b + MINUTE,)]

    starts = [to_ms(b + i * MINUTE) for i in range(3)]
    detections = [
        contract.Detection(
            alert_id=contract.alert_id("p-api", "spo2_low", start), patient_id="p-api",
            rule="spo2_low", state=state, severity="high", episode_start=start,
            at=start + (30_000 if state == "resolved" else 0), detected=start + 40_000,
            retrospective=False,
        )
        for start in starts
        for state in ("opened", "resolved")
    ]  # fmt: skip
    rows = [store.row_of(d) for d in detections]
    await db.execute(store.STORE, *[list(c) for c in zip(*rows, strict=True)])
    seen: list[tuple[Any, ...]] = []
    before: tuple[Any, ...] = (b + HOUR, str(uuid.UUID(int=0)), "")
    while True:  # newest first, two a page, strictly before the last (at, id, state)
        page = await db.fetch(queries.ALERTS, "p-api", b, b + HOUR, None, *before, 2)
        seen += values(page, "at", "state")
        if len(page) < 2:
            break
        before = (page[-1]["at"], page[-1]["alert_id"], page[-1]["state"])
    assert seen == sorted(
        [(b + i * MINUTE + (30 * SECOND if s == "resolved" else 0 * SECOND), s)
         for i in range(3) for s in ("opened", "resolved")],
        reverse=True,
    )  # fmt: skip
    resolved = await db.fetch(
        queries.ALERTS, "p-api", b, b + HOUR, "resolved", b + HOUR, str(uuid.UUID(int=0)), "", 10
    )
    assert [r["state"] for r in resolved] == ["resolved"] * 3


async def check_console_queries(db: Database) -> None:
    """The console's reads (readapi/history.py, readapi/burden.py) over alerts, their human
    states, device bindings and the hourly rollup: the same texts on every engine."""
    b = await hour_ago(db, 3)
    await store_readings(db, upload("p-con", "spo2", [(b + 5 * MINUTE, 95.0)]))
    starts = [to_ms(b + i * MINUTE) for i in (1, 2)]
    rows = [
        store.row_of(contract.Detection(
            alert_id=contract.alert_id("p-con", "spo2_low", start), patient_id="p-con",
            rule="spo2_low", state="opened", severity="high", episode_start=start, at=start,
            detected=start + 5_000, retrospective=False,
        ))
        for start in starts
    ]  # fmt: skip
    await db.execute(store.STORE, *[list(c) for c in zip(*rows, strict=True)])
    await db.execute(
        "UPDATE alerts SET published_at = at + interval '10 seconds' WHERE patient_id = 'p-con'"
    )
    first = rows[0][0]
    for state, after_s, outcome in (("acknowledged", 60, None), ("outcome", 120, "false_alarm")):
        await db.execute(
            "INSERT INTO alert_lifecycle (alert_id, state, patient_id, episode_start, at,"
            " actor_key_id, actor, outcome) SELECT alert_id, $2, patient_id, episode_start,"
            " published_at + make_interval(secs => $3::int), 'k1', 'nurse', $4 FROM alerts"
            " WHERE alert_id = $1 AND state = 'opened'",
            first, state, after_s, outcome,
        )  # fmt: skip
    await db.execute("INSERT INTO devices (device_id) VALUES ('w-con')")
    await db.execute(
        "INSERT INTO device_patients (device_id, patient_id, valid_from)"
        " VALUES ('w-con', 'p-con', $1)",
        b,
    )

    found = await db.fetch(
        history.HISTORY,
        "p-con",
        EARLIEST,
        LATEST,
        LATEST,
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        10,
    )
    assert values(found, "opened_at", "acknowledged_by", "outcome") == [
        (b + 2 * MINUTE, None, None), (b + MINUTE, "nurse", "false_alarm"),
    ]  # fmt: skip
    bound = await db.fetch(history.DEVICES, "p-con", 10)
    assert values(bound, "device_id", "current") == [("w-con", True)]
    span = (["p-con"], b, b + 3 * HOUR)
    days = await db.fetch(burden.PATIENT_DAYS, *span)
    assert values(days, "patient_id", "days") == [("p-con", 1)]
    alerted = await db.fetch(burden.ALERTED, *span)
    assert values(alerted, "patient_id", "alerts") == [("p-con", 2)]
    totals = await db.fetch(burden.ALERTS, *span)
    assert values(totals, "rule", "alerts", "answered", "ack_p50_s", "false_alarm") == [
        ("spo2_low", 2, 1, 60.0, 1), (None, 2, 1, 60.0, 1),
    ]  # fmt: skip


async def check_the_newest_minute_is_read_once_stored(db: Database) -> None:
    """After the refresh policies ran (as they do every minute and half hour), a reading of
    the current minute is in both views as soon as its transaction commits: the views
    answer from raw rows past their watermark. Materialized only, the minute view missed
    it until a run of its policy more than a minute later (issue 14, bug 1)."""
    if db.timescale:
        await hold_jobs(db)
    (row,) = await db.fetch("SELECT date_trunc('minute', now()) AS m")
    minute = row["m"]
    await store_readings(db, upload("p-now", "spo2", [(minute - 30 * MINUTE, 97.0)]))
    if db.timescale:
        await run_job(db, "readings_1m", "policy_refresh_continuous_aggregate")
        await run_job(db, "readings_1h", "policy_refresh_continuous_aggregate")

    await store_readings(db, upload("p-now", "spo2", [(minute, 91.0)]))

    start = minute - HOUR
    minutes = await db.fetch(queries.BUCKETS_1M, "p-now", "spo2", start, minute + MINUTE,
                             EARLIEST, 100)  # fmt: skip
    assert values(minutes, "bucket", "min_value", "n") == [
        (minute - 30 * MINUTE, 97.0, 1),  # materialized by the policy on TimescaleDB
        (minute, 91.0, 1),  # stored a moment ago
    ]
    # From the hour that holds the older reading: at 10:20 that is 09:00, before `start`.
    hour = (minute - 30 * MINUTE).replace(minute=0, second=0, microsecond=0)
    hours = await db.fetch(queries.BUCKETS_1H, "p-now", "spo2", hour, minute + HOUR,
                           EARLIEST, 100)  # fmt: skip
    assert sum(h["n"] for h in hours) == 2 and min(h["min_value"] for h in hours) == 91.0


async def _materialized(db: Database, view: str, query: str, *params: object) -> list[Row]:
    """What `view` holds materialized: real-time off for one query (a test database)."""
    await db.script(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = true)")
    try:
        return await db.fetch(query, *params)
    finally:
        await db.script(
            f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = false)"
        )


async def check_every_policy_job(db: Database) -> None:
    """Each of the seven policy jobs run once, as the scheduler would: old chunks compressed,
    old raw readings and scores dropped, alerts kept, and a backlog 7 days late folded into
    both views by their refresh policies."""
    await hold_jobs(db)
    now = await hour_ago(db, 0)
    old, cold, backlog = now - PAST_RETENTION_DAYS * DAY, now - 10 * DAY, now - 7 * DAY + 2 * HOUR
    await store_readings(db, upload("p-jobs", "heart_rate", [(old, 50.0), (cold, 60.0)]))
    await store_readings(db, upload("p-jobs", "heart_rate", [(now - 2 * HOUR, 80.0)]))
    month = now - 30 * DAY  # news2_scores' weekly chunks: this one ended over 7 days ago
    await store_scores(db, [news2_score("p-jobs", t, 1, t, heart_rate=1) for t in (old, month)])
    alert = _episode("p-jobs", old, "opened")
    await db.execute(store.STORE, *(list(c) for c in zip(*alert, strict=True)))
    # Refreshed once, then the gateway that was offline for a week uploads its backlog.
    await run_job(db, "readings_1m", "policy_refresh_continuous_aggregate")
    await run_job(db, "readings_1h", "policy_refresh_continuous_aggregate")
    await store_readings(db, upload("p-jobs", "heart_rate", [(backlog, 70.0)]))

    for job in await policy_jobs(db):
        await db.script(f"CALL run_job({int(job['job_id'])})")

    raw = await db.fetch("SELECT t FROM readings WHERE patient_id = 'p-jobs' ORDER BY t")
    assert values(raw, "t") == [(cold,), (backlog,), (now - 2 * HOUR,)]
    kept = await db.fetch("SELECT t FROM news2_scores WHERE patient_id = 'p-jobs'")
    assert values(kept, "t") == [(month,)]
    assert await db.fetch("SELECT count(*) AS n FROM alerts") == [{"n": 1}]  # no retention
    compressed = await db.fetch(
        """SELECT c.hypertable_name AS h, c.is_compressed FROM timescaledb_information.chunks c
           JOIN (VALUES ('alerts', $1::timestamptz), ('news2_scores', $2), ('readings', $3))
                AS v(h, t) ON c.hypertable_name = v.h AND c.range_start <= v.t
                           AND v.t < c.range_end
           ORDER BY 1""",
        old, month, cold,
    )  # fmt: skip
    assert values(compressed, "h", "is_compressed") == [
        ("alerts", True), ("news2_scores", True), ("readings", True),
    ]  # fmt: skip
    for view, query, bucket in (
        ("readings_1m", SERIES_1M, backlog),
        ("readings_1h", SERIES_1H, backlog.replace(minute=0)),
    ):
        rows = await _materialized(db, view, query, "p-jobs", "heart_rate", bucket, bucket + HOUR)
        assert values(rows, "bucket", "n") == [(bucket, 1)], view

"""Migrations on a real PostgreSQL: each test gets a fresh, empty database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from sinks.timescale.migrate import MIGRATIONS, discover, migrate, plan, timescale_available
from vitals import localinfra
from vitals.errors import ConfigError, InfrastructureError

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_url(pg_server: str) -> Iterator[str]:
    name = f"vitals_mig_{uuid.uuid4().hex[:10]}"
    url = localinfra.create_database(pg_server, name, exist_ok=False)
    yield url
    localinfra.drop_database(pg_server, name)


def _expected(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        timescale = timescale_available(conn)
    return [m.name for m in plan(discover(), timescale=timescale)]


def test_fresh_database_gets_every_migration_once_and_a_second_run_applies_nothing(
    fresh_url: str,
) -> None:
    applied = migrate(fresh_url)

    assert applied == _expected(fresh_url)
    assert applied[0] == "0001_readings" and "0002_alerts" in applied
    assert migrate(fresh_url) == []
    with psycopg.connect(fresh_url) as conn:
        recorded = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY 1")]
    assert recorded == sorted(applied)


def test_plain_postgresql_schema_has_the_tables_keys_and_indexes(fresh_url: str) -> None:
    migrate(fresh_url)
    with psycopg.connect(fresh_url) as conn:
        if timescale_available(conn):
            pytest.fail("this check is for plain PostgreSQL; the server has TimescaleDB")
        columns = dict(
            conn.execute(
                """SELECT table_name || '.' || column_name, data_type
                   FROM information_schema.columns
                   WHERE table_schema = 'public' AND table_name IN ('readings', 'alerts')"""
            ).fetchall()
        )
        keys = dict(
            conn.execute(
                """SELECT c.conrelid::regclass::text,
                          array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_constraint c
                   CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                   WHERE c.contype = 'p'
                     AND c.conrelid::regclass::text IN ('readings', 'alerts', 'news2_scores')
                   GROUP BY 1"""
            ).fetchall()
        )
        indexes = dict(
            conn.execute(
                """SELECT indexname, indexdef FROM pg_indexes
                   WHERE tablename IN ('readings', 'alerts', 'news2_scores')"""
            ).fetchall()
        )

    assert columns == {
        "readings.patient_id": "text",
        "readings.metric": "text",
        "readings.t": "timestamp with time zone",
        "readings.device_id": "text",
        "readings.value": "double precision",
        "readings.unit": "text",
        "readings.upload_id": "uuid",
        "readings.received_at": "timestamp with time zone",
        "alerts.alert_id": "uuid",
        "alerts.state": "text",
        "alerts.patient_id": "text",
        "alerts.rule": "text",
        "alerts.severity": "text",
        "alerts.retrospective": "boolean",
        "alerts.episode_start": "timestamp with time zone",
        "alerts.at": "timestamp with time zone",
        "alerts.detected_at": "timestamp with time zone",
        "alerts.metric": "text",
        "alerts.value": "double precision",
        "alerts.device_id": "text",
        "alerts.detail": "text",
        "alerts.published_at": "timestamp with time zone",
        "alerts.suppressed": "boolean",
    }
    assert keys == {
        "readings": ["patient_id", "metric", "t", "device_id"],
        # 0006: the key holds episode_start, the hypertable's time on TimescaleDB.
        "alerts": ["alert_id", "state", "episode_start"],
        "news2_scores": ["patient_id", "t"],
    }
    assert "USING brin (t)" in indexes["readings_t_brin"]
    assert "(patient_id, at DESC)" in indexes["alerts_patient_at"]
    assert "WHERE ((published_at IS NULL) AND (NOT suppressed))" in indexes["alerts_unpublished"]
    # 0006.plain: the old key stays unique, so the previous release's sink still works.
    assert (
        "UNIQUE INDEX alerts_alert_state ON public.alerts USING btree (alert_id, state)"
        in (indexes["alerts_alert_state"])
    )
    assert "USING brin (t)" in indexes["news2_scores_t_brin"]


def test_concurrent_starts_apply_each_migration_exactly_once(fresh_url: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(migrate, [fresh_url] * 3))

    # The advisory lock serialises them: one applies everything, the others nothing.
    assert sorted(results, key=len) == [[], [], _expected(fresh_url)]


def test_plan_picks_the_companions_that_fit_the_server() -> None:
    found = discover()

    timescale = [m.name for m in plan(found, timescale=True)]
    plain = [m.name for m in plan(found, timescale=False)]

    assert timescale[:2] == ["0001_readings", "0001_readings.timescale"]
    assert plain[:2] == ["0001_readings", "0001_readings.plain"]
    assert not any(name.endswith(".plain") for name in timescale)
    assert not any(name.endswith(".timescale") for name in plain)
    # Every file is used by one of the two plans.
    assert {p.name[:-4] for p in MIGRATIONS.glob("*.sql")} == set(timescale) | set(plain)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0001_first.sql": "", "1_bad.sql": ""}, "is not named"),
        ({"0001_first.sql": "", "0001_second.sql": ""}, "two migrations numbered 0001"),
        ({"0001_first.sql": "", "0002_orphan.plain.sql": ""}, "has no base migration"),
    ],
)
def test_badly_named_migration_files_are_refused_before_touching_the_database(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, sql in files.items():
        (tmp_path / name).write_text(sql)

    with pytest.raises(ConfigError, match=message):
        migrate("postgresql://nobody@127.0.0.1:1/none", tmp_path)


def test_a_failing_migration_is_rolled_back_whole_and_the_earlier_ones_stay(
    fresh_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (x int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE second (x int); SELEC 1;")

    with pytest.raises(InfrastructureError, match="0002_broken"):
        migrate(fresh_url, tmp_path)

    with psycopg.connect(fresh_url) as conn:
        recorded = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    assert recorded == ["0001_first"]
    assert "first" in tables and "second" not in tables

    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE second (x int);")
    assert migrate(fresh_url, tmp_path) == ["0002_broken"]


def test_an_applied_migration_edited_afterwards_is_reported_not_reapplied(
    fresh_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (x int);")
    migrate(fresh_url, tmp_path)
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (x int, y int);")

    with caplog.at_level(logging.WARNING, logger="sinks.timescale.migrate"):
        assert migrate(fresh_url, tmp_path) == []

    # A set: another test's in-process CLI run may have left a second capturing handler.
    assert {getattr(r, "migration", None) for r in caplog.records} == {"0001_first"}


def test_an_unreachable_database_is_a_clear_infrastructure_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{localinfra.free_port()}/vitals"

    with pytest.raises(InfrastructureError, match="unreachable"):
        migrate(url)

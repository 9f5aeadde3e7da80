"""Migrations on a real PostgreSQL: each test gets a fresh, empty database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from vitals.db.migrate import (
    MIGRATIONS,
    discover,
    flavour_of,
    migrate,
    plan,
    timescale_available,
)
from vitals.errors import ConfigError, InfrastructureError
from vitalsctl import localinfra

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


def test_schema_has_the_tables_keys_and_the_indexes_of_its_server(fresh_url: str) -> None:
    migrate(fresh_url)
    with psycopg.connect(fresh_url) as conn:
        timescale = timescale_available(conn)  # what migrate.py chose the companions by
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
    assert "(patient_id, at DESC)" in indexes["alerts_patient_at"]
    assert "WHERE ((published_at IS NULL) AND (NOT suppressed))" in indexes["alerts_unpublished"]
    plain_only = {"readings_t_brin", "news2_scores_t_brin", "alerts_alert_state"}
    if timescale:
        # Hypertables: chunks are excluded by time, so no BRIN; and no unique index without
        # the partitioning column (tests/support/timescale/checks.py checks the rest on the engine).
        assert not plain_only & set(indexes), sorted(indexes)
        return
    assert "USING brin (t)" in indexes["readings_t_brin"]
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

    with caplog.at_level(logging.WARNING, logger="vitals.db.migrate"):
        assert migrate(fresh_url, tmp_path) == []

    # A set: another test's in-process CLI run may have left a second capturing handler.
    assert {getattr(r, "migration", None) for r in caplog.records} == {"0001_first"}


def test_an_unreachable_database_is_a_clear_infrastructure_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{localinfra.free_port()}/vitals"

    with pytest.raises(InfrastructureError, match="unreachable"):
        migrate(url)


@pytest.mark.parametrize(
    ("applied", "available", "timescale"),
    [
        (set(), True, True),  # a fresh database: what the server offers
        (set(), False, False),
        ({"0001_readings"}, True, True),  # no companion recorded yet: still free to choose
        ({"0001_readings", "0001_readings.plain"}, False, False),
        ({"0001_readings", "0001_readings.timescale"}, True, True),
        # Made plain, the server gained the extension since: it stays plain.
        ({"0001_readings", "0001_readings.plain"}, True, False),
    ],
)
def test_a_database_keeps_the_flavour_it_was_made_with(
    applied: set[str], available: bool, timescale: bool
) -> None:
    assert flavour_of(applied, available) is timescale


def test_a_timescale_database_on_a_server_without_the_extension_is_refused() -> None:
    with pytest.raises(InfrastructureError, match="migrated with TimescaleDB"):
        flavour_of({"0001_readings", "0001_readings.timescale"}, False)


def test_a_database_made_with_the_other_flavour_is_migrated_as_it_was_made(
    fresh_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(fresh_url) as conn:
        timescale = timescale_available(conn)
    # Version 0001 as the other kind of server made it: a plain database on a server with
    # TimescaleDB; on plain PostgreSQL, only the record of a TimescaleDB one (its hypertable
    # cannot be made here).
    first = [m for m in plan(discover(), timescale=not timescale) if m.version == 1]
    with psycopg.connect(fresh_url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in first:
            conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                (m.name, m.checksum()),
            )
            if m.flavour is None or timescale:
                conn.execute(m.sql())

    if not timescale:  # refused before anything is applied
        with pytest.raises(InfrastructureError, match="migrated with TimescaleDB"):
            migrate(fresh_url)
        with psycopg.connect(fresh_url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (2,)
        return
    with caplog.at_level(logging.WARNING, logger="vitals.db.migrate"):
        applied = migrate(fresh_url)
    assert applied == [m.name for m in plan(discover(), timescale=False) if m.version > 1]
    assert any("stays plain" in r.getMessage() for r in caplog.records)

"""The storage on a real TimescaleDB engine, and the same reads on plain PostgreSQL.

No TimescaleDB server runs on the development machines, so by default the TimescaleDB
checks run on PGlite with TimescaleDB 2.23 compiled to WASM (tests/support/timescale/engine.mjs):
the migrations migrate.py would choose there, then the sinks' statements and the read
queries. With VITALS_TEST_CONTAINERS=1 the same checks run on the timescale/timescaledb
server that `pg_server` starts, migrated by migrate.py itself. Without Node (and without
containers) these tests fail with what to install; they never skip.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import USE_CONTAINERS
from tests.support.timescale import checks
from tests.support.timescale.databases import Database, Pglite, Server, engine_problem
from vitals.db import retention
from vitals.db.migrate import (
    MIGRATIONS,
    TIMESCALE_AVAILABLE,
    discover,
    flavour_of,
    migrate,
    plan,
    timescale_available,
)
from vitals.errors import InfrastructureError
from vitals.settings import RetentionSettings, Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration

# Files written before "every DDL idempotent" was the rule: CREATE TABLE/INDEX without
# IF NOT EXISTS. migrate.py never applies a file twice; these are not re-run below.
BEFORE_IDEMPOTENCE = {"0001_readings", "0001_readings.plain", "0002_alerts"}


@dataclass
class Storage:
    db: Database
    applied: list[str]  # migration names, in the order applied
    url: str = ""  # the server database's URL; empty on the WASM engine


@pytest.fixture(scope="session")
async def pglite() -> AsyncIterator[Pglite | None]:
    """The WASM engine's process, started once; each test resets it to an empty database."""
    if USE_CONTAINERS:  # the container's server stands in for it
        yield None
        return
    problem = engine_problem()
    if problem:
        pytest.fail(problem)
    async with Pglite.started() as engine:
        yield engine


@pytest.fixture
async def timescale(
    pglite: Pglite | None, request: pytest.FixtureRequest
) -> AsyncIterator[Storage]:
    """A fresh, migrated TimescaleDB database: WASM engine, or the container's server."""
    if pglite is None:
        async with _server_storage(request.getfixturevalue("pg_server")) as storage:
            assert storage.db.timescale, "the container's server has no TimescaleDB"
            yield storage
        return
    db = pglite
    await db.reset()
    # What migrate.py asks the server before choosing the companions.
    assert len(await db.fetch(TIMESCALE_AVAILABLE)) == 1
    await db.script("CREATE EXTENSION IF NOT EXISTS timescaledb")
    applied = await checks.apply(db, plan(discover(), timescale=True))
    # What migrate.py does after the files: the retention policies as the settings say.
    await db.script(retention.policy_sql(RetentionSettings()))
    yield Storage(db, applied)


@pytest.fixture
async def server(pg_server: str) -> AsyncIterator[Storage]:
    """A fresh database on the server at VITALS_TEST_PG_SERVER (plain PostgreSQL, or one with
    TimescaleDB: the checks follow what it is), migrated by migrate.py."""
    async with _server_storage(pg_server) as storage:
        yield storage


# "timescale": the WASM engine (or the container's server); "server": the test server,
# whatever it is. With containers they are the same server, so "server" is not collected.
ENGINES = ["timescale"] if USE_CONTAINERS else ["timescale", "server"]


@pytest.fixture(params=ENGINES)
def storage(request: pytest.FixtureRequest) -> Storage:
    return request.getfixturevalue(request.param)


def server_has_timescale(url: str) -> bool:
    """What migrate.py asks before choosing the companions: the checks ask the same."""
    with psycopg.connect(url) as conn:
        return timescale_available(conn)


@asynccontextmanager
async def _server_storage(server: str) -> AsyncIterator[Storage]:
    """A database made on `server` for one test, migrated by migrate.py, then dropped."""
    name = f"vitals_engine_{uuid.uuid4().hex[:10]}"
    url = localinfra.create_database(server, name, exist_ok=False)
    try:
        applied = migrate(url)
        async with Server.connected(url, timescale=server_has_timescale(url)) as db:
            yield Storage(db, applied, url)
    finally:
        localinfra.drop_database(server, name)


# --- tests -------------------------------------------------------------------------------


async def test_migrations_apply_the_companions_that_fit_the_engine(storage: Storage) -> None:
    db = storage.db
    expected = [m.name for m in plan(discover(), timescale=db.timescale)]
    assert storage.applied == expected
    assert f"0004_readings_rollups.{'timescale' if db.timescale else 'plain'}" in expected

    if db.timescale:
        await checks.check_timescale_schema(db)
    else:
        await checks.check_plain_schema(db)


async def test_every_newer_migration_can_be_applied_again(storage: Storage) -> None:
    again = [
        m
        for m in plan(discover(), timescale=storage.db.timescale)
        if m.name not in BEFORE_IDEMPOTENCE
    ]

    assert again, "no migration after 0002 to re-apply"
    assert await checks.apply(storage.db, again) == [m.name for m in again]
    if storage.db.timescale:
        await checks.check_timescale_schema(storage.db)  # nothing doubled or changed


async def test_rollups_have_the_same_columns_on_every_engine(storage: Storage) -> None:
    await checks.check_rollup_columns(storage.db)


async def test_the_readings_sink_statement_stores_each_reading_once(storage: Storage) -> None:
    await checks.check_readings_stored_once(storage.db)


async def test_the_alerts_sink_statements_store_list_and_mark_alerts(storage: Storage) -> None:
    await checks.check_alert_statements(storage.db)


async def test_rollups_per_minute_and_hour_answer_the_read_queries(storage: Storage) -> None:
    await checks.check_rollups(storage.db)


async def test_the_newest_minute_is_read_as_soon_as_it_is_stored(storage: Storage) -> None:
    await checks.check_the_newest_minute_is_read_once_stored(storage.db)


async def test_the_read_api_queries_page_across_materialized_and_recent_data(
    storage: Storage,
) -> None:
    await checks.check_read_api_queries(storage.db)


async def test_the_console_queries_read_history_devices_and_burden(storage: Storage) -> None:
    await checks.check_console_queries(storage.db)


async def test_retention_drops_old_raw_chunks_and_keeps_their_aggregates(
    timescale: Storage,
) -> None:
    await checks.check_retention_keeps_rollups(timescale.db)


async def test_retention_drops_old_readings_and_scores_and_spares_what_clinicians_signed(
    storage: Storage,
) -> None:
    """TimescaleDB: the policies' own jobs; plain PostgreSQL: `vitals db prune`."""

    async def expire() -> None:
        if storage.db.timescale:
            await checks.run_job(storage.db, "readings", "policy_retention")
            await checks.run_job(storage.db, "news2_scores", "policy_retention")
        else:  # the command as cron runs it
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "vitalsctl.cli", "db", "prune"],
                env={**os.environ, "VITALS_DATABASE_URL": storage.url},
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert (done.returncode, done.stdout) == (
                0,
                "readings: 1 rows older than their retention deleted\n"
                "news2_scores: 1 rows older than their retention deleted\n",
            ), done.stderr

    await checks.check_retention_spares_what_clinicians_signed(storage.db, expire)


async def test_a_changed_retention_setting_replaces_the_policy_once(timescale: Storage) -> None:
    db = timescale.db

    async def retention_jobs() -> list[tuple[str, int, str]]:
        jobs = await checks.policy_jobs(db)
        return [
            (j["relation"], j["job_id"], j["drop_after"])
            for j in jobs
            if j["proc_name"] == "policy_retention"
        ]

    before = await retention_jobs()
    await db.script(retention.policy_sql(RetentionSettings()))  # as configured: no change
    assert await retention_jobs() == before
    longer = RetentionSettings(readings_retention_days=3653)
    await db.script(retention.policy_sql(longer))
    after = await retention_jobs()
    assert [(r, d) for r, _, d in after] == [
        ("news2_scores", "2922 days"),
        ("readings", "3653 days"),
    ]
    assert after[0] == before[0] and after[1][1] != before[1][1]  # only readings' job replaced
    await db.script(retention.policy_sql(longer))
    assert await retention_jobs() == after


async def test_status_names_a_retention_policy_on_signed_records_or_one_the_settings_changed(
    timescale: Storage,
) -> None:
    """What `vitals status` reports from the engine's jobs (vitals/db/retention.py)."""
    db = timescale.db
    defaults = RetentionSettings()
    assert retention.policy_problems(await db.fetch(retention.POLICIES), defaults) == []
    longer = RetentionSettings(scores_retention_days=3653)
    assert retention.policy_problems(await db.fetch(retention.POLICIES), longer) == [
        "news2_scores keeps 2922 days, scores_retention_days says 3653 days: "
        "run `vitals db migrate`"
    ]
    await db.script("SELECT add_retention_policy('alerts', drop_after => INTERVAL '3 years')")
    assert retention.policy_problems(await db.fetch(retention.POLICIES), defaults) == [
        "a retention policy on alerts would drop clinical records: "
        "SELECT remove_retention_policy('alerts') (docs/storage.md, Retention)"
    ]


def test_prune_on_an_unreachable_database_says_so() -> None:
    with pytest.raises(InfrastructureError, match="database unreachable for pruning"):
        retention.prune("postgresql://nobody@127.0.0.1:1/none", RetentionSettings())


def test_the_retention_settings_refuse_too_short_or_negative_periods() -> None:
    for days in (0, -1, 60):
        with pytest.raises(ValueError, match="must be at least 61 days"):
            RetentionSettings(readings_retention_days=days)
        with pytest.raises(ValueError, match="scores_retention_days"):
            RetentionSettings(scores_retention_days=days)
    assert RetentionSettings(readings_retention_days=61).readings_retention_days == 61
    # Late readings are replayed and stored for allowed_lateness_s: the raw data must outlast it.
    with pytest.raises(ValueError, match="readings_retention_days must outlast allowed_lateness_s"):
        Settings(readings_retention_days=61, allowed_lateness_s=61 * 86_400)


def test_vitals_db_migrate_refuses_a_nonsensical_retention_before_touching_the_database() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", "db", "migrate"],
        env={**os.environ, "VITALS_SCORES_RETENTION_DAYS": "-5",
             "VITALS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "scores_retention_days = -5: must be at least 61 days" in done.stderr


async def test_a_late_upload_into_a_compressed_chunk_is_stored_once(timescale: Storage) -> None:
    await checks.check_late_upload_into_compressed_chunk(timescale.db)


async def test_alert_key_holds_the_hypertable_time_and_the_roles_keep_their_grants(
    storage: Storage,
) -> None:
    await checks.check_alert_key_and_grants(storage.db)


async def test_news2_scores_are_stored_replaced_by_later_computations_and_read(
    storage: Storage,
) -> None:
    await checks.check_news2_scores(storage.db)


async def test_alerts_in_a_compressed_chunk_are_resolved_and_published(
    timescale: Storage,
) -> None:
    await checks.check_alerts_in_compressed_chunks(timescale.db)


async def test_a_news2_score_in_a_compressed_chunk_is_replaced(timescale: Storage) -> None:
    await checks.check_news2_scores_in_compressed_chunks(timescale.db)


# Alerts became a hypertable in 0006: a database made by 0001-0005 must upgrade in place.
LAST_BEFORE_ALERTS_HYPERTABLE = 5


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_database_made_by_0001_to_0005_with_alerts_upgrades_in_place(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if engine == "timescale" and not USE_CONTAINERS:
        db = request.getfixturevalue("pglite")
        await db.reset()
        await db.script("CREATE EXTENSION IF NOT EXISTS timescaledb")
        every = plan(discover(), timescale=True)
        await checks.apply(db, [m for m in every if m.version <= LAST_BEFORE_ALERTS_HYPERTABLE])
        rows = await checks.store_alerts_before_0006(db)
        await checks.apply(db, [m for m in every if m.version > LAST_BEFORE_ALERTS_HYPERTABLE])
        await checks.check_alerts_after_upgrade(db, rows)
        return
    # A server: migrate.py with only the old files, then with all of them.
    for path in MIGRATIONS.glob("*.sql"):
        if int(path.name[:4]) <= LAST_BEFORE_ALERTS_HYPERTABLE:
            (tmp_path / path.name).write_bytes(path.read_bytes())
    server = request.getfixturevalue("pg_server")
    name = f"vitals_upgrade_{uuid.uuid4().hex[:10]}"
    url = localinfra.create_database(server, name, exist_ok=False)
    try:
        assert migrate(url, tmp_path)[-1] == "0005_gateway_security"
        async with Server.connected(url, timescale=server_has_timescale(url)) as db:
            rows = await checks.store_alerts_before_0006(db)
            applied = migrate(url)
            assert applied[0] == "0006_alerts_hypertable"
            await checks.check_alerts_after_upgrade(db, rows)
    finally:
        localinfra.drop_database(server, name)


# The WASM engine can hold a database made without the extension and then load it; with
# containers, test_migrations.py checks the same on the TimescaleDB server through migrate.py.
@pytest.mark.skipif(USE_CONTAINERS, reason="covered by test_migrations.py on the server")
async def test_a_database_made_plain_stays_plain_when_the_server_gains_timescaledb(
    pglite: Pglite | None,
) -> None:
    """Before, migrate.py chose companions by the server alone: here it would have applied
    the TimescaleDB ones over plain ones and failed (0004: "readings_1m" is not a continuous
    aggregate; 0006: cannot create a unique index without "episode_start"), each file before
    the failing one committed: half a conversion."""
    assert pglite is not None
    await pglite.reset()  # no extension created: migrated as on plain PostgreSQL
    every = plan(discover(), timescale=False)
    made = await checks.apply(pglite, [m for m in every if m.version <= 5])
    await pglite.script("CREATE EXTENSION IF NOT EXISTS timescaledb")

    timescale = flavour_of(set(made), len(await pglite.fetch(TIMESCALE_AVAILABLE)) == 1)

    assert timescale is False
    rest = [m for m in plan(discover(), timescale=timescale) if m.name not in made]
    assert await checks.apply(pglite, rest) == [m.name for m in every if m.version > 5]
    await checks.check_plain_schema(pglite)
    await checks.check_alert_statements(pglite)


async def test_every_policy_job_runs_once_and_does_its_work(timescale: Storage) -> None:
    await checks.check_every_policy_job(timescale.db)

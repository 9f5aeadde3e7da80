"""The deployments' database roles on a real, migrated PostgreSQL: the Grafana role with
the dashboard's SQL, and each process's login role (`vitals db roles`) with its own code.

A fresh database is migrated (`migrate.py`), then granted with compose's own
`grafana-grants` psql command (deploy/timescaledb/grafana-reader.sql), run twice. Every SQL
query of the dashboard (panels and the patient variable), with Grafana's macros expanded
the way Grafana does, must then run as that role and find the rows written for one patient.
The role must not write, nor read what the dashboard does not show.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import psycopg
import pytest
import yaml

from frontdoor import registry_store
from frontdoor.keys import digest
from readapi.audit import ReadAudit
from readapi.fhir_alerts import insert as insert_subscription
from readapi.fhir_alerts import subscription_of as fhir_subscription_of
from readapi.queries import NEWS2_LATEST
from sinks.alerts import store as alerts_store
from sinks.fhir_notify import queue as notify_queue
from sinks.timescale.scores import upsert_scores
from sinks.timescale.writer import ReadingsWriter
from tests.support import cli
from vitals import fhir_alerts
from vitals.db import alert_issues
from vitals.db.logins import LOGINS, ensure_logins, parse_passwords
from vitals.db.migrate import migrate
from vitals.errors import ConfigError, InfrastructureError
from vitalsctl import localinfra

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vitals-pipeline.json"
PATIENT = "p-it's-42"  # a quote, so an unescaped interpolation would break the SQL
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Reader:
    url: str  # the database as the Grafana role
    owner_url: str  # the same database as the superuser that migrated it


def grants_command() -> list[str]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return compose["services"]["grafana-grants"]["command"]


def run_grants(owner_url: str, reader: str) -> None:
    """Compose's psql command, pointed at this server and database, for another role."""
    psql = shutil.which("psql")
    assert psql, "psql (the PostgreSQL client) is needed to run deploy/timescaledb/*.sql"
    url = urlsplit(owner_url)
    argv = grants_command()
    replace = {
        "-h": url.hostname,
        "-U": url.username,
        "-d": url.path.lstrip("/"),
        "-f": str(DEPLOY / "timescaledb" / "grafana-reader.sql"),
    }
    for flag, value in replace.items():
        argv[argv.index(flag) + 1] = value
    variables = {"reader": reader, "db": url.path.lstrip("/"), "password": "not-used-on-trust"}
    for i, arg in enumerate(argv):
        if arg == "-v" and argv[i + 1].split("=")[0] in variables:
            name = argv[i + 1].split("=")[0]
            argv[i + 1] = f"{name}={variables[name]}"
    argv = [psql, "-p", str(url.port or 5432), *argv[1:]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def reader(pg_server: str) -> Iterator[Reader]:
    name = f"vitals_dash_{uuid.uuid4().hex[:10]}"
    role = f"grafana_reader_{uuid.uuid4().hex[:8]}"
    owner_url = localinfra.create_database(pg_server, name, exist_ok=False)
    try:
        migrate(owner_url)
        run_grants(owner_url, role)
        run_grants(owner_url, role)  # idempotent: every `compose up` runs it
        url = urlsplit(owner_url)
        yield Reader(
            url._replace(netloc=f"{role}@{url.hostname}:{url.port or 5432}").geturl(), owner_url
        )
    finally:
        localinfra.drop_database(pg_server, name)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def expand(sql: str, start: datetime, end: datetime) -> str:
    """Grafana's macros and the `${patient:sqlstring}` format (quotes doubled, then quoted)."""
    sql = sql.replace("${patient:sqlstring}", "'" + PATIENT.replace("'", "''") + "'")
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )
    assert "$" not in sql, f"a macro or variable this test does not expand: {sql}"
    return sql


def sql_queries() -> dict[str, str]:
    """panel title (or variable name) -> SQL, for every SQL query of the dashboard."""
    doc = json.loads(DASHBOARD.read_text())
    found = {
        panel["title"]: target["rawSql"]
        for panel in doc["panels"]
        for target in panel.get("targets", [])
        if "rawSql" in target
    }
    found |= {v["name"]: v["query"] for v in doc["templating"]["list"] if v["type"] == "query"}
    return found


def seed(owner_url: str) -> None:
    with psycopg.connect(owner_url) as conn:
        for minutes, value in ((5, 96.0), (4, 88.0)):
            conn.execute(
                "INSERT INTO readings VALUES (%s, 'spo2', %s, 'watch-1', %s, '%%', %s, %s)",
                (PATIENT, NOW - timedelta(minutes=minutes), value, uuid.uuid4(), NOW),
            )
        conn.execute(
            "INSERT INTO alerts (alert_id, state, patient_id, rule, severity, retrospective,"
            " episode_start, at, detected_at, metric, value)"
            " VALUES (%s, 'opened', %s, 'spo2_low', 'high', false, %s, %s, %s, 'spo2', 88)",
            (uuid.uuid4(), PATIENT, NOW - timedelta(minutes=6), NOW - timedelta(minutes=4), NOW),
        )


def test_every_dashboard_sql_query_runs_as_the_grafana_role_and_finds_the_patient(
    reader: Reader,
) -> None:
    seed(reader.owner_url)
    queries = sql_queries()
    assert {"patient", "Vitals of $patient (per minute)"} <= set(queries)
    start, end = NOW - timedelta(hours=1), NOW + timedelta(minutes=1)

    with psycopg.connect(reader.url) as conn:
        results = {
            title: conn.execute(expand(sql, start, end)).fetchall()
            for title, sql in queries.items()
        }

    assert (PATIENT,) in results["patient"]
    # Time series format: a time column, `metric` naming the series, the value.
    series = results["Vitals of $patient (per minute)"]
    assert [(row[1], row[2]) for row in series] == [("spo2", 96.0), ("spo2", 88.0)]
    assert [r[1:3] for r in results["Alerts of $patient"]] == [("spo2_low", "opened")]
    assert [r[1:3] for r in results["Latest readings of $patient"]] == [
        ("spo2", 88.0),
        ("spo2", 96.0),
    ]
    for title, rows in results.items():
        assert rows, f"{title}: no rows for the seeded patient"


def test_the_grafana_role_can_neither_write_nor_read_beyond_the_dashboard(reader: Reader) -> None:
    with psycopg.connect(reader.url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM alerts")
        conn.execute("SET default_transaction_read_only = off")  # a role may; the grant stops it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM alerts")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM schema_migrations")
        timeout = conn.execute("SHOW statement_timeout").fetchone()
        assert timeout == ("30s",)


# --- each process's login role (`vitals db roles`, vitals/db/logins.py) ------------


@dataclass(frozen=True)
class Logins:
    urls: dict[str, str]  # process -> the database as its login role
    names: dict[str, tuple[str, str]]  # process -> (login role, group role)
    owner_url: str


@pytest.fixture
def logins(pg_server: str) -> Iterator[Logins]:
    """A migrated database and every process's login role, set up twice (every deploy runs
    it). Roles are cluster-wide, so this run's get a unique suffix and are dropped after."""
    name = f"vitals_roles_{uuid.uuid4().hex[:10]}"
    tag = uuid.uuid4().hex[:6]
    names = {p: (f"{login}_{tag}", group) for p, (login, group) in LOGINS.items()}
    passwords = {p: f"pw-{p}-{tag}-long-enough" for p in LOGINS}
    owner_url = localinfra.create_database(pg_server, name, exist_ok=False)
    try:
        migrate(owner_url)
        assert ensure_logins(owner_url, passwords, names) == [n for n, _ in names.values()]
        ensure_logins(owner_url, passwords, names)
        url = urlsplit(owner_url)
        urls = {
            p: url._replace(netloc=f"{login}@{url.hostname}:{url.port or 5432}").geturl()
            for p, (login, _group) in names.items()
        }
        yield Logins(urls, names, owner_url)
    finally:
        localinfra.drop_database(pg_server, name)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for login, _group in names.values():
                conn.execute(f'DROP ROLE IF EXISTS "{login}"')


def groups_of(owner_url: str, login: str) -> set[str]:
    with psycopg.connect(owner_url) as conn:
        rows = conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
            (login,),
        ).fetchall()
    return {r[0] for r in rows}


def test_each_login_role_is_granted_only_its_group_and_a_password(logins: Logins) -> None:
    with psycopg.connect(logins.owner_url) as conn:
        for process, (login, group) in logins.names.items():
            assert groups_of(logins.owner_url, login) == {group}, process
            flags = conn.execute(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls,"
                " rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                (login,),
            ).fetchone()
            assert flags == (True, False, False, False, False, True), process


def test_a_login_granted_another_group_by_hand_is_put_right(logins: Logins) -> None:
    login, _group = logins.names["api"]
    with psycopg.connect(logins.owner_url, autocommit=True) as conn:
        conn.execute(f'GRANT vitals_sink TO "{login}"')
    assert groups_of(logins.owner_url, login) == {"vitals_reader", "vitals_sink"}
    ensure_logins(logins.owner_url, {"api": "another-long-password"}, logins.names)
    assert groups_of(logins.owner_url, login) == {"vitals_reader"}


def test_login_roles_fail_clearly_without_their_group_or_a_good_password(pg_server: str) -> None:
    name = f"vitals_roles_{uuid.uuid4().hex[:10]}"
    url = localinfra.create_database(pg_server, name, exist_ok=False)
    try:
        # The group roles may exist from other databases; a missing table is what fails.
        names = {"api": (f"vitals_api_login_{uuid.uuid4().hex[:6]}", "vitals_no_such_group")}
        with pytest.raises((ConfigError, InfrastructureError)):
            ensure_logins(url, {"api": "a-long-enough-password"}, names)
    finally:
        localinfra.drop_database(pg_server, name)
    with pytest.raises(ConfigError, match="unknown process"):
        parse_passwords("processor:a-long-enough-password")
    with pytest.raises(ConfigError, match="12\\+ characters"):
        parse_passwords("api:short")
    with pytest.raises(ConfigError, match="no db login passwords"):
        ensure_logins(url, {})


READING_SQL = (
    "INSERT INTO readings (patient_id, metric, t, device_id, value, unit, upload_id, received_at)"
    " VALUES ('p', 'heart_rate', now(), 'd', 70, '/min', gen_random_uuid(), now())"
)


async def allowed(url: str, sql: str) -> bool:
    """Runs `sql` as the role in a transaction rolled back: False on permission denied."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(sql)
            raise Rollback
    except Rollback:
        return True
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await conn.close()


class Rollback(Exception):
    pass


async def test_each_process_does_its_job_as_its_login_role_and_nothing_more(
    logins: Logins,
) -> None:
    """Each process's own code, run as its login role, then what it must not do."""
    urls = logins.urls
    at = NOW - timedelta(minutes=1)

    # sink-timescale: the writer's COPY paths: straight into readings, then (a duplicate)
    # through the temporary staging table.
    conn = await asyncpg.connect(urls["sink-timescale"])
    try:
        row = ("p-roles", "spo2", at, "w1", 97.0, "%", uuid.uuid4(), NOW)
        writer = ReadingsWriter()
        assert await writer.write(conn, [row]) == (1, ())
        assert await writer.write(conn, [row]) == (0, ()) and writer.careful
        # Another value for that reading: recorded as a conflict (0012's grants).
        assert await writer.write(conn, [(*row[:4], 88.0, *row[5:])]) == (0, ("spo2",))
        # ... and NEWS2 scores: inserted, then replaced by a re-computation (an UPDATE).
        score = ("p-roles", at, 3, "low-medium", True, True, 1, "{}", NOW)
        assert await upsert_scores(conn, [score]) == 1
        assert await upsert_scores(conn, [(*score[:2], 5, "medium", *score[4:])]) == 1
    finally:
        await conn.close()

    # sink-alerts: store, find unpublished, mark published.
    conn = await asyncpg.connect(urls["sink-alerts"])
    try:
        alert_id = uuid.uuid4()
        alert = (alert_id, "opened", "p-roles", "spo2_low", "high", False, at, at, NOW,
                 "spo2", 88.0, "w1", "{}", False)  # fmt: skip
        assert await alerts_store.store(conn, [alert]) == 1
        keys = alerts_store.keys_of([alert])
        assert len(await alerts_store.unpublished(conn, keys)) == 1
        assert await alerts_store.mark_published(conn, keys, NOW) == 1
    finally:
        await conn.close()

    # gateway: load its registry, register a device (the admin API), which is audited.
    conn = await asyncpg.connect(urls["gateway"])
    try:
        await registry_store.register_device(
            conn, "w-roles", "p-roles", ["gw-roles"], since=at, actor=("admin", "ops")
        )
        snapshot = await registry_store.load(conn)
        assert "w-roles" in snapshot.devices
        # ... and care teams (0010): add one, assign a patient.
        await registry_store.add_team(conn, "ward-roles", actor=("admin", "ops"))
        await registry_store.assign_patients(
            conn, "ward-roles", ["p-roles"], assign=True, actor=("admin", "ops")
        )
    finally:
        await conn.close()

    # api: load the reader keys, read the readings the sink wrote.
    owner = await asyncpg.connect(logins.owner_url)
    try:
        reader_key_id, reader_key = await registry_store.issue_key(
            owner, "reader", "dash", expires_at=None, actor=("cli", "pytest"), teams=["ward-roles"]
        )
        _, gateway_key = await registry_store.issue_key(
            owner, "gateway", "gw-roles", expires_at=None, actor=("cli", "pytest")
        )
    finally:
        await owner.close()
    conn = await asyncpg.connect(urls["api"])
    try:
        readers = await registry_store.load_readers(conn)
        assert set(readers.credentials) == {digest(reader_key)}  # never the gateway's key
        assert readers.care_teams == {"p-roles": frozenset({"ward-roles"})}
        count = await conn.fetchval("SELECT count(*) FROM readings WHERE patient_id = 'p-roles'")
        assert count == 1
        latest = await conn.fetchrow(NEWS2_LATEST, "p-roles", NOW)
        assert latest is not None and latest["news2"] == 5
    finally:
        await conn.close()
    # api: append to the read audit through its read-only sessions, as the API does.
    pool = await asyncpg.create_pool(
        urls["api"], min_size=0, server_settings={"default_transaction_read_only": "on"}
    )
    try:
        audit = ReadAudit(pool, queue_max=10, batch_max=10, flush_s=1)
        reader = next(iter(readers.credentials.values()))
        audit.read(reader, "readings", "p-roles", outcome="ok", status=200, rows=1)
        assert await audit.flush() == 1
    finally:
        await pool.close()
    # api: register a FHIR subscription (0017) in its read-only sessions, as the API does.
    pool = await asyncpg.create_pool(
        urls["api"], min_size=0, server_settings={"default_transaction_read_only": "on"}
    )
    try:
        async with pool.acquire() as conn:
            subscription = fhir_subscription_of(
                orjson.dumps(
                    {"resourceType": "Subscription", "reason": "roles",
                     "criteria": fhir_alerts.TOPIC,
                     "channel": {"type": "rest-hook", "endpoint": "http://ehr.invalid/hook",
                                 "payload": "application/fhir+json",
                                 "_payload": {"extension": [{"url": fhir_alerts.PAYLOAD_CONTENT,
                                                             "valueCode": "id-only"}]}}}
                )
            )  # fmt: skip
            await insert_subscription(conn, subscription, reader_key_id)
    finally:
        await pool.close()
    # sink-fhir-notify: queue the alert stored above for the key's subscription (its scope
    # checked by 0017's function), claim it, record it.
    conn = await asyncpg.connect(urls["sink-fhir-notify"])
    try:
        now = datetime.now(UTC)  # after the subscription: it takes changes from its creation on
        assert await notify_queue.queue(conn, alert_id, "opened", 0, "p-roles", now) == 1
        (due,) = await notify_queue.claim(conn, 10, timedelta(seconds=30))
        assert due.allowed and due.subscription_id == subscription.subscription_id
        await notify_queue.delivered(conn, due)
        assert len(await alert_issues.alerts(conn, ids=[alert_id])) == 1
    finally:
        await conn.close()
    gateway_snapshot_conn = await asyncpg.connect(urls["gateway"])
    try:
        gateway_keys = (await registry_store.load(gateway_snapshot_conn)).credentials
        assert digest(gateway_key) in gateway_keys and digest(reader_key) not in gateway_keys
    finally:
        await gateway_snapshot_conn.close()

    forbidden = {
        "sink-timescale": [
            "SELECT * FROM api_keys",
            "SELECT * FROM reader_keys",
            "SELECT * FROM audit_log",
            "SELECT * FROM devices",
            "DELETE FROM readings",
            "UPDATE readings SET value = 0",
            "DROP TABLE readings",
            "DELETE FROM news2_scores",
            "DELETE FROM reading_conflicts",
            "UPDATE reading_conflicts SET stored_value = 0",
        ],
        "sink-alerts": [
            "SELECT * FROM api_keys",
            "SELECT * FROM reader_keys",
            "SELECT * FROM reader_key_teams",
            "DELETE FROM fhir_notifications",
            "DELETE FROM alerts",
            "SELECT * FROM device_patients",
        ],
        "gateway": [
            "SELECT * FROM readings",
            "SELECT * FROM alerts",
            "SELECT * FROM news2_scores",
            "SELECT * FROM reader_keys",
            "SELECT * FROM audit_log",
            "UPDATE api_keys SET revoked_at = now()",
            "INSERT INTO api_keys (key_id, kind, principal, key_sha256)"
            " VALUES ('k', 'admin', 'me', decode(repeat('00', 32), 'hex'))",
            "DELETE FROM audit_log",
            "SELECT * FROM read_audit",
            "SELECT * FROM reader_key_teams",
        ],
        "api": [
            READING_SQL,
            "SELECT * FROM fhir_notifications",
            "UPDATE fhir_subscriptions SET endpoint = 'http://elsewhere/'",
            "UPDATE alerts SET severity = 'low'",
            "UPDATE news2_scores SET news2 = 0",
            "SELECT * FROM api_keys",
            "SELECT * FROM audit_log",
            "SELECT * FROM devices",
            # It reads device bindings for the console's patient view (0016), never writes.
            "UPDATE device_patients SET patient_id = 'me'",
            "CREATE TABLE mine (x int)",
            "SELECT * FROM read_audit",  # the audit it writes: insert only
            "UPDATE read_audit SET row_count = 0",
            "DELETE FROM read_audit",
            "SELECT * FROM reader_key_teams",
            "INSERT INTO care_team_patients (team_id, patient_id) VALUES ('ward-roles', 'me')",
        ],
    }
    for process, statements in forbidden.items():
        assert [s for s in statements if await allowed(urls[process], s)] == [], process


def test_the_db_roles_command_refuses_missing_or_bad_passwords(logins: Logins) -> None:
    """`vitals db roles` as the deployments run it, on its error paths (a successful run
    would make the fixed, cluster-wide role names on this shared server)."""
    for passwords, error in (
        ("", "no db login passwords"),
        ("gateway:short", "12+ characters"),
        ("processor:long-enough-password", "unknown process"),
    ):
        env = {"VITALS_DB_LOGIN_PASSWORDS": passwords}
        done = cli.vitals("db", "roles", database_url=logins.owner_url, code=1, env=env)
        assert error in done.stderr
        assert passwords.split(":")[-1] not in done.stderr or not passwords  # never echoed

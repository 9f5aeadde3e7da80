"""The Grafana dashboard's SQL on a real, migrated PostgreSQL, as the role Grafana uses.

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

import psycopg
import pytest
import yaml

from sinks.timescale.migrate import migrate
from vitals import localinfra

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

"""Session fixtures: a real broker and a real PostgreSQL, started once.

Default (no Docker): Apache Kafka (KRaft, one node) from its Maven Central jars when Java
17+ is here, else tansu (VITALS_TEST_BROKER=kafka|tansu chooses; vitalsctl/localkafka.py), and
a fresh database on the PostgreSQL server at VITALS_TEST_PG_SERVER (default
127.0.0.1:5432; if none answers, a private cluster from the machine's binaries). With
VITALS_TEST_CONTAINERS=1 (a machine with Docker): Apache Kafka (KRaft) and
timescale/timescaledb through testcontainers. Every test gets its own topic prefix, so
tests never see each other's messages. The session's first and last lines name the broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from vitals.db.migrate import migrate
from vitals.kafka import create_topics
from vitals.settings import Settings
from vitalsctl import localinfra, localkafka

ROOT = Path(__file__).resolve().parent.parent
USE_CONTAINERS = os.environ.get("VITALS_TEST_CONTAINERS") == "1"
LOCAL = ROOT / ".local"
# What the session's broker was, for the closing summary: (description, resources).
BROKER_SEEN: list[tuple[str, str]] = []


def test_broker_kind() -> tuple[str, str]:
    """The local broker kind the suites run on, and why (VITALS_TEST_BROKER to choose)."""
    return localkafka.broker_kind(os.environ.get("VITALS_TEST_BROKER") or None)


test_broker_kind.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def pytest_report_header() -> str:
    if USE_CONTAINERS:
        return "broker: Apache Kafka in a container (testcontainers; deploy/compose.yaml's image)"
    try:
        kind, why = test_broker_kind()
    except Exception as exc:  # the fixture raises it again where a broker is needed
        return f"broker: none ({exc})"
    name = f"Apache Kafka {localkafka.KAFKA_VERSION} (KRaft)" if kind == "kafka" else "tansu"
    return f"broker: {name}, {why}; VITALS_TEST_BROKER=kafka|tansu chooses"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for description, resources in BROKER_SEEN:
        terminalreporter.write_line(f"broker used: {description}, {resources}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if USE_CONTAINERS:
        from tests.support.containers import kafka_container

        port = localinfra.free_port()
        with kafka_container(port) as kafka:
            BROKER_SEEN.append((f"{kafka.image} (testcontainers)", "in Docker"))
            yield f"{kafka.get_container_host_ip()}:{port}"
        return
    kind, _ = test_broker_kind()
    folder = LOCAL / f"test-broker.{os.getpid()}"
    with localkafka.local_broker(kind, folder, LOCAL) as broker:
        BROKER_SEEN.append((broker.describe(), broker.resources()))
        yield broker.bootstrap


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database."""
    if USE_CONTAINERS:
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("timescale/timescaledb:latest-pg16", driver=None) as pg:
            yield pg.get_connection_url()
        return
    given = os.environ.get("VITALS_TEST_PG_SERVER")
    with localinfra.postgres_server(given, ROOT / ".local" / "test-pg") as url:
        yield url


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A database made for this test run, migrated, dropped afterwards."""
    yield from migrated_database(pg_server, "vitals_test")


def migrated_database(pg_server: str, prefix: str) -> Iterator[str]:
    """A new database on `pg_server` with every migration applied, dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = localinfra.create_database(pg_server, name, exist_ok=False)
    migrate(url)
    yield url
    localinfra.drop_database(pg_server, name)


@pytest.fixture
async def settings(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Settings]:
    """Settings for one test: its own topics (prefix), the session's broker and database."""
    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        topic_partitions=3,
        migrate_on_start=False,
    )
    await create_topics(s)
    yield s

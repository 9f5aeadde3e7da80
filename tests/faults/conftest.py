"""The fault suite's own infrastructure and pipeline, shared by its scenarios.

Its own broker and PostgreSQL cluster (it freezes and restarts them), one database,
one topic prefix, and one pipeline of `vitals` processes that every scenario starts from
(a scenario restarts whatever the previous one left stopped). Results are collected per
scenario and written to .local/faults/results.json, with the report beside it
(.local/faults/faults.md) when every scenario ran; `make faults-report` publishes it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import test_broker_kind
from tests.faults import report
from tests.faults.checks import TopicReader, Verdict
from tests.faults.infra import Broker, PrivatePostgres
from tests.support.stages import BASELINE, Stages, environment
from vitals import contract
from vitals.db.migrate import migrate
from vitals.kafka import create_topics
from vitals.settings import Settings
from vitalsctl import localinfra

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".local" / "faults"

# Every scenario in docs/faults.md; the document is regenerated only when all ran.
SCENARIOS: list[str] = []
RESULTS: dict[str, Verdict] = {}
BROKER: list[str] = []  # what the session's broker was, for the report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def fault_logs() -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS


@pytest.fixture(scope="session")
def broker(fault_logs: Path) -> Iterator[Broker]:
    """Apache Kafka as production runs it, three brokers (topics replicated three times,
    two in sync for a write), so that brokers can fail; tansu has one node only."""
    kind, _ = test_broker_kind()
    b = Broker(fault_logs / "broker", size=3 if kind == "kafka" else 1)
    BROKER.append(b.describe())
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    yield pg
    pg.destroy()


@pytest.fixture(scope="session")
async def fault_settings(broker: Broker, postgres: PrivatePostgres) -> Settings:
    url = localinfra.create_database(postgres.server_url, "vitals_faults")
    await asyncio.to_thread(migrate, url)
    s = Settings(
        kafka_bootstrap=broker.address,
        database_url=url,
        topic_prefix=f"f{uuid.uuid4().hex[:6]}.",
        topic_partitions=3,
        topic_replication=len(broker.nodes),
        gateway_port=localinfra.free_port(),
        migrate_on_start=False,
    )
    await create_topics(s)
    return s


@pytest.fixture(scope="session")
def stages(fault_settings: Settings, fault_logs: Path) -> Iterator[Stages]:
    s = fault_settings
    # Checkpoint rounds every 2 s (60 s in production): every processor scenario then
    # crosses rounds, and its restarts restore from them as production's do.
    env = environment(
        s.kafka_bootstrap,
        s.database_url,
        s.topic_prefix,
        s.gateway_port,
        VITALS_CHECKPOINT_INTERVAL_S="2",
    )
    st = Stages(env, fault_logs, s.gateway_port)
    try:
        st.ensure(BASELINE)
        yield st
    finally:
        st.stop_all()


@pytest.fixture
def pipeline(stages: Stages, broker: Broker) -> Stages:
    """The baseline pipeline, running and ready, before each scenario."""
    broker.thaw()
    stages.ensure(BASELINE)
    return stages


@pytest.fixture(scope="session")
async def alert_topic(fault_settings: Settings) -> AsyncIterator[TopicReader]:
    reader = TopicReader(fault_settings, contract.ALERTS)
    await reader.start()
    yield reader
    await reader.stop()


@pytest.fixture(scope="session")
async def deadletter_topic(fault_settings: Settings) -> AsyncIterator[TopicReader]:
    reader = TopicReader(fault_settings, contract.DEADLETTER)
    await reader.start()
    yield reader
    await reader.stop()


def record(verdict: Verdict) -> None:
    RESULTS[verdict.scenario] = verdict


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge this run's results into results.json; regenerate docs/faults.md from a run
    that covered every scenario (never from a mix of runs)."""
    if not RESULTS:
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / "results.json"
    previous = orjson.loads(path.read_bytes())["results"] if path.exists() else []
    merged = {r["scenario"]: r for r in previous}
    merged.update({name: v.as_dict() for name, v in RESULTS.items()})
    ordered = [merged[name] for name in SCENARIOS if name in merged]
    doc = {"broker": BROKER[0] if BROKER else "", "results": ordered}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if set(SCENARIOS) <= RESULTS.keys():
        report.write([RESULTS[name].as_dict() for name in SCENARIOS], doc["broker"])

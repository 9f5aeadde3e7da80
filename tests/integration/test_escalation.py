"""Escalation and the publication of human states by the alerts sink's escalator, on a
real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sinks.alerts.escalation import Escalator
from tests.support.alert_schema import violations
from tests.support.inprocess import escalating
from tests.support.polling import until
from tests.support.readapi import store_open
from tests.support.topics import read_all
from vitals import contract
from vitals.errors import ConfigError
from vitals.rules_file import DEFAULT_RULES_FILE
from vitals.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def esc(settings: Settings, fresh_url: str) -> Settings:
    """A database of the test's own: the escalator looks at every alert stored."""
    fast = {"escalation": "high:0.4,1.2", "escalation_check_interval_s": 0.1}
    return settings.model_copy(update={"database_url": fresh_url, **fast})


async def _published(settings: Settings) -> list[dict]:
    docs = [orjson.loads(r.value) for r in await read_all(settings, contract.ALERTS)]
    return [d for d in docs if d["schema"] == contract.ALERT_SCHEMA_V2]


async def _rows(url: str) -> list[tuple[str, int, bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT alert_id::text, state, level, published_at IS NOT NULL AS published"
            " FROM alert_lifecycle ORDER BY alert_id, state, level"
        )
    finally:
        await conn.close()
    return [(r["alert_id"], r["state"], r["level"], r["published"]) for r in rows]


async def _acknowledge(url: str, alert: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO alert_lifecycle (alert_id, state, patient_id, episode_start, at,"
            " actor_key_id, actor) SELECT alert_id, 'acknowledged', patient_id, episode_start,"
            " now(), 'k1', 'nurse' FROM alerts WHERE alert_id = $1 AND state = 'opened'",
            uuid.UUID(alert),
        )
    finally:
        await conn.close()


async def test_an_alert_left_alone_escalates_level_by_level_and_each_is_published_once(
    esc: Settings,
) -> None:
    conn = await asyncpg.connect(esc.database_url)
    try:
        alone = await store_open(conn, "p-alone")
        taken = await store_open(conn, "p-taken")
    finally:
        await conn.close()
    await _acknowledge(esc.database_url, taken)

    async with escalating(esc) as escalator:

        async def two_levels_published() -> bool:
            return [r for r in await _rows(esc.database_url) if r[3]] == sorted(
                [(alone, "escalated", 1, True), (alone, "escalated", 2, True),
                 (taken, "acknowledged", 0, True)]
            )  # fmt: skip

        await until(two_levels_published, "levels 1 and 2 published, the acknowledgement too")
        assert escalator.leading
        await asyncio.sleep(0.5)  # more ticks: nothing new

    docs = await _published(esc)
    assert sorted((d["alert_id"], d["state"], d["escalation_level"]) for d in docs) == sorted(
        [(alone, "escalated", 1), (alone, "escalated", 2), (taken, "acknowledged", 0)]
    )
    assert all(violations(d) == [] for d in docs)
    assert {d["actor"] for d in docs if d["state"] == "escalated"} == {None}


async def test_two_sinks_at_once_one_leads_and_nothing_is_doubled(esc: Settings) -> None:
    conn = await asyncpg.connect(esc.database_url)
    try:
        alone = await store_open(conn, "p-alone")
    finally:
        await conn.close()

    async with escalating(esc) as first, escalating(esc) as second:

        async def levels() -> bool:
            return len([r for r in await _rows(esc.database_url) if r[3]]) == 2

        await until(levels, "two levels published")
        assert first.leading != second.leading
        await asyncio.sleep(0.5)

    docs = await _published(esc)
    assert sorted((d["state"], d["escalation_level"]) for d in docs) == [
        ("escalated", 1),
        ("escalated", 2),
    ]
    assert {d["alert_id"] for d in docs} == {alone}


async def test_a_successor_finds_what_its_predecessor_published_but_never_marked(
    esc: Settings,
) -> None:
    # The predecessor recorded level 1 and published it, then died before marking it.
    conn = await asyncpg.connect(esc.database_url)
    try:
        alone = await store_open(conn, "p-alone")
        await conn.execute(
            "INSERT INTO alert_lifecycle (alert_id, state, level, patient_id, episode_start,"
            " at) SELECT alert_id, 'escalated', 1, patient_id, episode_start, now()"
            " FROM alerts WHERE alert_id = $1 AND state = 'opened'",
            uuid.UUID(alone),
        )
        opened = (await _pending(conn))[0]
    finally:
        await conn.close()
    producer = AIOKafkaProducer(bootstrap_servers=esc.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        published = contract.now_ms()
        doc = contract.lifecycle_document(opened[1], opened[2], published)
        await producer.send_and_wait(esc.topic(contract.ALERTS), orjson.dumps(doc), key=b"p")
    finally:
        await producer.stop()

    async with escalating(esc.model_copy(update={"escalation": "high:0.4,30"})):

        async def marked() -> bool:
            return (alone, "escalated", 1, True) in await _rows(esc.database_url)

        await until(marked, "level 1 marked from the topic")
        await asyncio.sleep(0.5)

    docs = await _published(esc)
    assert [(d["state"], d["escalation_level"]) for d in docs] == [("escalated", 1)]


async def _pending(conn: asyncpg.Connection) -> list:
    from sinks.alerts import lifecycle

    return await lifecycle.unpublished(conn)


async def test_a_cohort_patient_escalates_on_its_cohort_times_the_others_on_the_default(
    esc: Settings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        DEFAULT_RULES_FILE.read_text(encoding="utf-8")
        + '\n[cohorts.copd.escalation]\nhigh = [0.4]\n[patients."p-copd"]\ncohort = "copd"\n'
    )
    conn = await asyncpg.connect(esc.database_url)
    try:
        copd = await store_open(conn, "p-copd")
        other = await store_open(conn, "p-other")
    finally:
        await conn.close()
    # The default (the setting) is far away: only the cohort's patient escalates.
    slow = esc.model_copy(update={"escalation": "high:600", "rules_file": str(rules)})
    async with escalating(slow):

        async def copd_escalated() -> bool:
            return (copd, "escalated", 1, True) in await _rows(esc.database_url)

        await until(copd_escalated, "the copd patient escalated on its cohort's time")
        await asyncio.sleep(0.5)  # more ticks: still nobody else, no level 2

    assert [r[:3] for r in await _rows(esc.database_url)] == [(copd, "escalated", 1)]
    assert other not in {d["alert_id"] for d in await _published(esc)}


def test_a_bad_escalation_in_the_rules_file_stops_the_escalator(
    esc: Settings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        DEFAULT_RULES_FILE.read_text(encoding="utf-8") + "\n[cohorts.copd.escalation]\nhigh = [0]\n"
    )
    with pytest.raises(ConfigError, match=r"cohorts\.copd\.escalation\.high: delays must be"):
        Escalator(esc.model_copy(update={"rules_file": str(rules)}))

"""The alerts sink on a real broker (tansu) and a real PostgreSQL, and the public schema."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from prometheus_client import REGISTRY

from sinks.alerts.runner import STAGE, run_sink
from sinks.alerts.store import row_of
from tests.support.alert_schema import violations
from tests.support.inprocess import stage_task
from tests.support.metrics import sample
from tests.support.polling import until
from tests.support.topics import committed, group_offsets, read_all
from vitals import contract
from vitals.db.pgtime import to_ms
from vitals.errors import ContractError
from vitals.settings import Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # 2026-11-18, ms


# --- a validator for the subset of JSON Schema that alert.schema.json uses ---------------


# --- helpers -------------------------------------------------------------------------


def _detection(patient: str, rule: str = "spo2_low", **changes: Any) -> contract.Detection:
    start = changes.pop("episode_start", T0)
    fields: dict[str, Any] = {
        "alert_id": contract.alert_id(patient, rule, start),
        "patient_id": patient,
        "rule": rule,
        "state": "opened",
        "severity": "high",
        "episode_start": start,
        "at": start + 120_000,
        "detected": start + 121_000,
        "retrospective": False,
        "metric": "spo2",
        "value": 87.0,
        "device_id": "watch-1",
        "detail": "spo2 < 90",
    }
    return contract.Detection(**(fields | changes))


async def _produce(
    settings: Settings, messages: Sequence[tuple[bytes, bytes]]
) -> list[RecordMetadata]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        return [
            await producer.send_and_wait(settings.topic(contract.DETECTIONS), value, key=key)
            for key, value in messages
        ]
    finally:
        await producer.stop()


@asynccontextmanager
async def _group_offsets(settings: Settings) -> AsyncIterator[Callable[[], Any]]:
    """committed() -> {partition: offset} of the alerts group on the detections topic."""
    topic = settings.topic(contract.DETECTIONS)
    async with group_offsets(settings, settings.alerts_group) as reader:
        yield lambda: committed(reader, topic)


def _sink(settings: Settings) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    # The session's database holds other tests' acknowledgements: their publication is
    # tested in test_escalation.py, on a database of its own.
    return stage_task(run_sink, settings, escalate=False)


async def _sink_until_committed(settings: Settings) -> None:
    """Run a sink until its group committed every detection, then stop it."""
    ends = {r.partition: r.offset + 1 for r in await read_all(settings, contract.DETECTIONS)}
    async with _group_offsets(settings) as committed, _sink(settings):

        async def caught_up() -> bool:
            return await committed() == ends

        await until(caught_up, "the alerts sink to commit every detection")


async def _rows(database_url: str, alert_ids: Sequence[str]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT * FROM alerts WHERE alert_id = ANY($1::uuid[]) ORDER BY alert_id, state",
            list(alert_ids),
        )
    finally:
        await conn.close()


def _consumed() -> float:
    return REGISTRY.get_sample_value("vitals_consumed_records_total", {"stage": STAGE}) or 0.0


@pytest.fixture
def own(settings: Settings) -> Settings:
    return settings.model_copy(update={"alerts_group": f"alerts-{uuid.uuid4().hex[:8]}"})


# --- the schema ----------------------------------------------------------------------


def test_alert_documents_of_every_shape_match_the_published_schema() -> None:
    threshold = _detection("p-1")
    silence = _detection(
        "p-1",
        rule="device_silence",
        severity="low",
        metric=None,
        value=None,
        detail="no upload from the device for >= 900 s",
    )
    late = _detection(
        "p-1", rule="hr_high", metric="heart_rate", value=141, retrospective=True, state="resolved"
    )

    for detection in (threshold, silence, late):
        assert violations(contract.alert_document(detection, T0 + 200_000)) == []


def test_human_states_are_v2_documents_that_match_the_schema_and_v1_stays_as_it_was() -> None:
    opened = _detection("p-1")
    v1 = contract.alert_document(opened, T0 + 200_000)
    changes = [
        contract.LifecycleChange("acknowledged", 0, T0 + 300_000, "nurse-ward-3"),
        contract.LifecycleChange("escalated", 2, T0 + 400_000, None),
        contract.LifecycleChange("outcome", 0, T0 + 500_000, "nurse-ward-3", "false_alarm"),
    ]

    for change in changes:
        document = contract.lifecycle_document(opened, change, T0 + 600_000)
        assert violations(document) == [], change
        assert document["schema"] == "vitals.alert/2" and document["alert_id"] == v1["alert_id"]
        # A v1 subscriber reads `schema` first and skips it; every v1 field is still there.
        assert set(v1) < set(document) and "note" not in document
    assert v1["schema"] == "vitals.alert/1" and "escalation_level" not in v1
    broken = contract.lifecycle_document(opened, changes[1], T0) | {"escalation_level": -1}
    assert any("below 0" in problem for problem in violations(broken))
    wrong = contract.lifecycle_document(opened, changes[0], T0) | {"outcome": "fine"}
    assert any("is not one of" in problem for problem in violations(wrong))


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.pop("rule"), "rule missing"),
        (lambda d: d.update(value="87"), "is not of type"),
        (lambda d: d.update(retrospective=0), "is not of type"),
        (lambda d: d.update(state="closed"), "is not one of"),
        (lambda d: d.update(schema="vitals.alert/2"), "is not 'vitals.alert/1'"),
        (lambda d: d.update(at="2026-11-22T10:00:00"), "not an RFC 3339 date-time"),
        (lambda d: d.update(alert_id="episode-7"), "is not a UUID"),
        (lambda d: d.update(ward="4B"), "ward not allowed"),
    ],
)
def test_the_schema_check_rejects_documents_that_break_it(
    change: Callable[[dict[str, Any]], object], complaint: str
) -> None:
    document = contract.alert_document(_detection("p-1"), T0 + 200_000)
    change(document)

    assert any(complaint in problem for problem in violations(document))


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"alert_id": "episode-7"}, "not a UUID"),
        ({"retrospective": "yes"}, "retrospective"),
        ({"suppressed": 1}, "suppressed"),
        ({"metric": 5}, "metric"),
        ({"device_id": ["watch-1"]}, "device_id"),
        ({"detail": None}, "detail"),
        ({"value": "87"}, "value"),
        ({"value": True}, "value"),
        ({"at": 10**18}, "out of range"),
    ],
)
def test_detections_that_cannot_be_stored_or_published_are_contract_errors(
    change: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ContractError, match=complaint):
        row_of(_detection("p-1", **change))


# --- the sink on the broker ----------------------------------------------------------


async def test_each_episode_state_is_stored_and_published_once_even_after_a_restart(
    own: Settings,
) -> None:
    a, b = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    opened = _detection(a)
    # A processor that replays after a restart decides the same episode again, later.
    duplicate = dataclasses.replace(opened, detected=opened.detected + 60_000)
    resolved = dataclasses.replace(
        opened, state="resolved", at=T0 + 600_000, detected=T0 + 601_000, value=93.0
    )
    late = _detection(
        b, rule="hr_high", severity="medium", metric="heart_rate", value=140.0, retrospective=True
    )
    silence = _detection(
        b, rule="device_silence", severity="low", metric=None, value=None, episode_start=T0 + 5_000
    )
    # Decodes, but PostgreSQL refuses it (NUL is not valid in text): parked, not retried
    # forever, and the rest of the batch is stored.
    refused = _detection(b, rule="spo2_low", episode_start=T0 + 9_000, detail="spo2\x00low")
    # A repeat soon after the last episode resolved: stored, marked, never published.
    repeat = _detection(b, rule="hr_high", episode_start=T0 + 20_000, suppressed=True)
    repeat_resolved = dataclasses.replace(repeat, state="resolved", at=T0 + 900_000)
    messages = [
        (a.encode(), contract.encode_detection(opened)),
        (a.encode(), b'{"v": 1, "alert_id": "only this"}'),
        (a.encode(), contract.encode_detection(duplicate)),
        (b.encode(), contract.encode_detection(late)),
        (b.encode(), contract.encode_detection(refused)),
        (a.encode(), contract.encode_detection(resolved)),
        (b.encode(), contract.encode_detection(silence)),
        (b.encode(), contract.encode_detection(repeat)),
        (b.encode(), contract.encode_detection(repeat_resolved)),
    ]
    sent = await _produce(own, messages)

    await _sink_until_committed(own)

    published = await read_all(own, contract.ALERTS)
    documents = [orjson.loads(r.value) for r in published]
    assert sorted((d["alert_id"], d["state"]) for d in documents) == sorted(
        (x.alert_id, x.state) for x in (opened, resolved, late, silence)
    )
    for record, document in zip(published, documents, strict=True):
        assert violations(document) == []
        assert record.key == document["patient_id"].encode()
    of_a = [d for d in documents if d["patient_id"] == a]
    assert [d["state"] for d in of_a] == ["opened", "resolved"]  # one partition, in order
    # The first stored version is the one published, not the later duplicate.
    assert of_a[0]["detected_at"] == contract.iso(opened.detected)
    assert {d["rule"]: d["retrospective"] for d in documents if d["patient_id"] == b} == {
        "hr_high": True,
        "device_silence": False,
    }

    ids = [opened.alert_id, late.alert_id, silence.alert_id, refused.alert_id, repeat.alert_id]
    rows = await _rows(own.database_url, ids)
    repeats = [r for r in rows if r["suppressed"]]
    assert [(str(r["alert_id"]), r["state"], r["published_at"]) for r in repeats] == [
        (repeat.alert_id, "opened", None),
        (repeat.alert_id, "resolved", None),
    ]
    stored = {
        (str(r["alert_id"]), r["state"]): contract.iso(to_ms(r["published_at"]))
        for r in rows
        if not r["suppressed"]
    }
    assert stored == {(d["alert_id"], d["state"]): d["published_at"] for d in documents}

    letters = [orjson.loads(r.value) for r in await read_all(own, contract.DEADLETTER)]
    parked = {}
    for letter in letters:
        origin = letter["origin"]
        parked[origin["topic"], origin["partition"], origin["offset"]] = letter["error"]
    topic = own.topic(contract.DETECTIONS)
    assert {origin: error.split(":")[0] for origin, error in parked.items()} == {
        (topic, sent[1].partition, sent[1].offset): "ContractError",
        (topic, sent[4].partition, sent[4].offset): "CharacterNotInRepertoireError",
    }

    # Restart, as if the offsets had been lost (a new group reads every detection again),
    # with one more redelivered duplicate: nothing is published again.
    await _produce(own, [(a.encode(), contract.encode_detection(duplicate))])
    again = own.model_copy(update={"alerts_group": f"alerts-{uuid.uuid4().hex[:8]}"})
    await _sink_until_committed(again)

    assert [r.value for r in await read_all(own, contract.ALERTS)] == [r.value for r in published]
    assert await _rows(own.database_url, ids) == rows


async def test_a_sink_stopped_during_a_database_outage_publishes_and_commits_nothing(
    own: Settings,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    detection = _detection(patient)
    await _produce(own, [(patient.encode(), contract.encode_detection(detection))])
    down = own.model_copy(
        update={
            "database_url": f"postgresql://postgres@127.0.0.1:{localinfra.free_port()}/vitals",
        }
    )
    consumed = _consumed()

    async with _group_offsets(own) as committed:
        async with _sink(down):
            await until(
                lambda: _consumed() >= consumed + 2,
                "the detection to be tried twice",
            )
        # Stopped while the database is still down: it left without committing.
        assert await committed() == {}

    assert await read_all(own, contract.ALERTS) == []
    assert await _rows(own.database_url, [detection.alert_id]) == []


async def test_an_alert_acknowledged_but_never_marked_is_not_published_again(
    own: Settings,
) -> None:
    """The window between vitals.alerts' acknowledgement and the row's marking: a trigger
    refuses the marking, so the sink retries the batch again and again; then it stops there
    (as a sink that dies in the window) and a new sink starts once the database takes the
    update. The alert is on the topic once, and the row carries that document's time."""
    patient = f"p-{uuid.uuid4().hex[:8]}"
    detection = _detection(patient)
    name = f"refuse_mark_{patient.replace('-', '_')}"
    conn = await asyncpg.connect(own.database_url)
    await conn.execute(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.patient_id = '{patient}' AND NEW.published_at IS NOT NULL THEN
                RAISE EXCEPTION 'marking refused by the test';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE UPDATE ON alerts FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    try:
        await _produce(own, [(patient.encode(), contract.encode_detection(detection))])
        consumed = _consumed()
        async with _group_offsets(own) as committed:
            async with _sink(own):
                await until(lambda: _consumed() >= consumed + 3, "the batch retried twice")
            assert await committed() == {}  # never marked, so never committed
        mine = [a for a in await _alerts(own) if a["patient_id"] == patient]
        assert len(mine) == 1, "an acknowledged alert was sent again on the retry"
    finally:
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON alerts; DROP FUNCTION {name}()")
        await conn.close()

    await _sink_until_committed(own)  # a new sink: it knows nothing of the first
    mine = [a for a in await _alerts(own) if a["patient_id"] == patient]
    assert len(mine) == 1, "the new sink published the alert again"
    (row,) = await _rows(own.database_url, [detection.alert_id])
    assert row["published_at"] == datetime.fromisoformat(mine[0]["published_at"])


async def _alerts(settings: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(settings, contract.ALERTS)]


async def test_published_alerts_are_counted_by_rule_and_severity_with_their_latency(
    own: Settings,
) -> None:
    now = contract.now_ms()
    patient = f"p-{uuid.uuid4().hex[:8]}"
    # Live: the reading that opened it is 40 s old, the processor decided 2 s ago.
    live = _detection(patient, episode_start=now - 160_000, at=now - 40_000, detected=now - 2_000)
    # Retrospective: hours late by definition, so not an end-to-end latency sample.
    late = _detection(
        patient,
        rule="hr_high",
        severity="medium",
        metric="heart_rate",
        value=140.0,
        retrospective=True,
        episode_start=now - 7_300_000,
        at=now - 7_200_000,
        detected=now - 3_000,
    )
    counted = {
        "live": ("spo2_low", "high", "opened", "false"),
        "late": ("hr_high", "medium", "opened", "true"),
    }
    keys = ("rule", "severity", "state", "retrospective")
    published = "vitals_alerts_published_total"
    before = {k: sample(published, **dict(zip(keys, v, strict=True))) for k, v in counted.items()}
    event = {
        s: sample(f"vitals_alert_latency_seconds_{s}", since="event") for s in ("count", "sum")
    }
    decided = {
        s: sample(f"vitals_alert_latency_seconds_{s}", since="detected") for s in ("count", "sum")
    }
    await _produce(own, [(patient.encode(), contract.encode_detection(d)) for d in (live, late)])

    await _sink_until_committed(own)
    elapsed_s = (contract.now_ms() - now) / 1000

    for k, v in counted.items():
        assert sample(published, **dict(zip(keys, v, strict=True))) == before[k] + 1, k
    assert sample("vitals_alert_latency_seconds_count", since="event") == event["count"] + 1
    event_s = sample("vitals_alert_latency_seconds_sum", since="event") - event["sum"]
    assert 40 <= event_s <= 40 + elapsed_s
    assert sample("vitals_alert_latency_seconds_count", since="detected") == decided["count"] + 2
    decided_s = sample("vitals_alert_latency_seconds_sum", since="detected") - decided["sum"]
    assert 2 + 3 <= decided_s <= 2 + 3 + 2 * elapsed_s


def test_recovery_reads_alert_documents_and_passes_over_anything_else() -> None:
    from sinks.alerts.recovery import _key

    detection = _detection("p-recovery")
    document = contract.alert_document(detection, T0 + 125_000)
    key, published = _key(orjson.dumps(document))
    assert key == row_of(detection)[0:2] + (row_of(detection)[6],)
    assert to_ms(published) == T0 + 125_000
    for other in (
        b"not json",
        b"[]",
        b'{"alert_id": "x"}',
        orjson.dumps({**document, "alert_id": "1"}),
        None,
    ):
        assert _key(other) is None, other

"""Alerts in FHIR and FHIR Subscriptions (issue 15, part 3), end to end on real parts: the
broker, PostgreSQL, the read API over HTTP, the alerts sink and the FHIR notifier, and
subscriber endpoints that are real HTTP servers in this process (uvicorn), some answering
500 or never answering. Notifications and alert resources are validated by the HAPI FHIR
validator (tests/support/fhir/)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from frontdoor import registry_store
from sinks.alerts.runner import run_sink as run_alerts_sink
from sinks.fhir_notify.runner import run_sink as run_notifier
from tests.support.fhir import validator
from tests.support.ids import uid
from tests.support.polling import until
from tests.support.readapi import AUTH, bearer, quick, running
from vitals import contract, fhir_alerts
from vitals.settings import Settings
from vitalsctl import localinfra, stages

pytestmark = pytest.mark.integration

CLI = ("cli", "pytest")
T0 = 1_795_312_800_000  # ms


# --- subscriber endpoints -------------------------------------------------------------------


@dataclass
class Hook:
    """One endpoint's behaviour: answer `failures` 500s first, or never answer (`hang`)."""

    failures: int = 0
    hang: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0


class Endpoints:
    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        self.base = ""

    def add(self, name: str, **behaviour: Any) -> str:
        self.hooks[name] = Hook(**behaviour)
        return f"{self.base}/hook/{name}"

    async def receive(self, request: Request) -> Response:
        hook = self.hooks[request.path_params["name"]]
        hook.attempts += 1
        body = await request.body()
        if hook.hang:
            await asyncio.sleep(3600)
        if hook.failures > 0:
            hook.failures -= 1
            return Response(status_code=500)
        hook.received.append(orjson.loads(body))
        hook.headers.append(dict(request.headers))
        return Response(status_code=200)


@asynccontextmanager
async def endpoints() -> AsyncIterator[Endpoints]:
    found = Endpoints()
    app = Starlette(routes=[Route("/hook/{name}", found.receive, methods=["POST"])])
    # log_config=None and no log_level: uvicorn would otherwise reconfigure its loggers for
    # the whole test process (later tests read what the front doors log).
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    config.timeout_graceful_shutdown = 1
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the endpoints' server to start", 10)
    found.base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield found
    finally:
        server.should_exit = True
        server.force_exit = True
        await asyncio.wait_for(serving, 15)


# --- helpers ------------------------------------------------------------------------------


def subscription(endpoint: str, *, content: str = "full-resource", patient: str | None = None,
                 headers: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    doc: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [fhir_alerts.SUBSCRIPTION_PROFILE]},
        "status": "requested",
        "reason": "ward alerts to the EHR",
        "criteria": fhir_alerts.TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": fhir_alerts.PAYLOAD_CONTENT, "valueCode": content}]},
        },
    }
    if patient is not None:
        doc["_criteria"] = {
            "extension": [
                {
                    "url": fhir_alerts.FILTER_CRITERIA,
                    "valueString": f"DetectedIssue?patient={patient}",
                }
            ]
        }
    if headers is not None:
        doc["channel"]["header"] = headers
    return doc


async def register(client: httpx.AsyncClient, key: str, doc: Any) -> httpx.Response:
    return await client.post(
        "/fhir/r4/Subscription",
        content=doc if isinstance(doc, bytes) else orjson.dumps(doc),
        headers={**bearer(key), "Content-Type": "application/fhir+json"},
    )


async def team_key(db: asyncpg.Connection, *patients: str) -> str:
    """An issued reader key for a new team holding `patients`."""
    team = uid("ward")
    await registry_store.add_team(db, team, actor=CLI)
    await registry_store.assign_patients(db, team, list(patients), assign=True, actor=CLI)
    _, key = await registry_store.issue_key(
        db, "reader", uid("ehr"), expires_at=None, actor=CLI, teams=[team]
    )
    return key


def detection(patient: str, state: str = "opened", start: int = T0) -> contract.Detection:
    return contract.Detection(
        alert_id=contract.alert_id(patient, "spo2_low", start), patient_id=patient,
        rule="spo2_low", state=state, severity="high", episode_start=start,
        at=start + (120_000 if state == "opened" else 900_000), detected=start + 121_000,
        retrospective=False, metric="spo2", value=87.0, device_id="watch-1",
        detail="spo2 < 90 for >= 120 s",
    )  # fmt: skip


async def produce(settings: Settings, *detections: contract.Detection) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for d in detections:
            await producer.send_and_wait(
                settings.topic(contract.DETECTIONS),
                contract.encode_detection(d),
                key=d.patient_id.encode(),
            )
    finally:
        await producer.stop()


@asynccontextmanager
async def pipeline(settings: Settings) -> AsyncIterator[None]:
    """The alerts sink and the FHIR notifier, in this process."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_alerts_sink(settings, stop, escalate=False)),
        asyncio.create_task(run_notifier(settings, stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def fast(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "fhir_notify_group": uid("notify"),
            "alerts_group": uid("alerts"),
            "fhir_notify_poll_s": 0.1,
            "fhir_notify_timeout_s": 1.0,
            "fhir_notify_retry_base_s": 0.2,
            "fhir_notify_retry_max_s": 0.5,
            **update,
        }
    )


async def notifications(db: asyncpg.Connection, subscription_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM fhir_notifications WHERE subscription_id = $1 ORDER BY event_number",
        uuid.UUID(subscription_id),
    )


def status_parameters(bundle: dict[str, Any]) -> dict[str, Any]:
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Parameters"
    return {p["name"]: p for p in first["parameter"]}


def focus_of(bundle: dict[str, Any]) -> str:
    event = status_parameters(bundle)["notification-event"]["part"]
    return next(p["valueReference"]["reference"] for p in event if p["name"] == "focus")


# --- tests --------------------------------------------------------------------------------


async def test_an_alert_reaches_its_subscribers_as_valid_fhir_and_never_one_outside_their_teams(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    mine, theirs = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    key = await team_key(db, mine)
    await team_key(db, theirs)
    s = fast(settings)
    emitted: dict[str, Any] = {}
    async with endpoints() as hooks, running(quick(database_url, api_rate_limit_per_s=0)) as api:

        async def loaded() -> bool:
            answer = await register(api, key, {"resourceType": "Subscription"})
            return answer.status_code == 400  # authenticated: the key has loaded

        await until(loaded, "the issued key to load")
        full = await register(
            api, key, subscription(hooks.add("full"), headers=["Authorization: Bearer ehr-secret"])
        )
        assert full.status_code == 201, full.text
        emitted["subscription"] = full.json()
        assert full.headers["location"].endswith(f"/fhir/r4/Subscription/{full.json()['id']}")
        assert "header" not in full.json()["channel"]  # the endpoint's secret is not echoed
        only = await register(api, key, subscription(hooks.add("id-only"), content="id-only",
                                                     patient=mine))  # fmt: skip
        assert only.status_code == 201, only.text
        read_back = await api.get(f"/fhir/r4/Subscription/{only.json()['id']}", headers=bearer(key))
        assert read_back.json() == only.json()

        async with pipeline(s):
            await produce(s, detection(theirs), detection(mine))

            async def both_arrived() -> bool:
                return bool(hooks.hooks["full"].received and hooks.hooks["id-only"].received)

            await until(both_arrived, "a notification at each endpoint")
            await produce(s, detection(mine, "resolved"))
            await until(lambda: len(hooks.hooks["full"].received) == 2, "the resolution")

        alert = contract.alert_id(mine, "spo2_low", T0)
        for name in ("full", "id-only"):
            rows = await notifications(db, (full if name == "full" else only).json()["id"])
            # Only my patient's alert was queued for my key's subscriptions.
            assert {r["patient_id"] for r in rows} == {mine}, name
        first, second = hooks.hooks["full"].received
        assert hooks.hooks["full"].headers[0]["authorization"] == "Bearer ehr-secret"
        assert first["type"] == "history"
        assert focus_of(first).endswith(f"/fhir/r4/DetectedIssue/{alert}")
        status = status_parameters(first)
        assert status["topic"]["valueCanonical"] == fhir_alerts.TOPIC
        assert status["type"]["valueCode"] == "event-notification"
        assert [p["valueString"] for p in status["notification-event"]["part"]
                if p["name"] == "event-number"] == ["1"]  # fmt: skip
        issue = first["entry"][1]["resource"]
        assert issue["resourceType"] == "DetectedIssue" and issue["id"] == alert
        assert issue["patient"] == {"reference": f"Patient/{mine}"}
        assert issue["severity"] == "high" and "end" not in issue["identifiedPeriod"]
        assert second["entry"][1]["resource"]["identifiedPeriod"]["end"]  # resolved
        id_only = hooks.hooks["id-only"].received[0]
        assert len(id_only["entry"]) == 1 and focus_of(id_only) == focus_of(first)

        found = await api.get(
            "/fhir/r4/DetectedIssue", params={"patient": mine}, headers=bearer(key)
        )
        assert found.status_code == 200
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [alert]
        one = await api.get(f"/fhir/r4/DetectedIssue/{alert}", headers=bearer(key))
        assert one.status_code == 200 and one.json()["identifiedPeriod"]["end"]
        # Another team's alert is no alert at all to this key.
        stranger = await api.get(
            f"/fhir/r4/DetectedIssue/{contract.alert_id(theirs, 'spo2_low', T0)}",
            headers=bearer(key),
        )
        assert stranger.status_code == 404
        assert stranger.json()["issue"][0]["details"]["coding"][0]["code"] == "no_such_alert"
        search = await api.get("/fhir/r4/DetectedIssue", params={"patient": theirs},
                               headers=bearer(key))  # fmt: skip
        assert search.status_code == 404
        emitted.update(
            {"notification-full": first, "notification-resolved": second,
             "notification-id-only": id_only, "searchset": found.json(),
             "detectedissue": one.json(), "outcome": stranger.json()}
        )  # fmt: skip

    results = validator.validate(emitted)
    errors = {n: [m for m in ms if m.severity in ("ERROR", "FATAL")] for n, ms in results.items()}
    warnings = sorted(
        {f"{m.severity}\t{m.location}\t{m.text}" for ms in results.values() for m in ms
         if m.severity not in ("ERROR", "FATAL")}
    )  # fmt: skip
    out = validator.ROOT / ".local" / "fhir-validator" / "warnings-alerts.txt"
    out.write_text("".join(f"{line}\n" for line in warnings))
    assert not any(errors.values()), {n: e for n, e in errors.items() if e}


async def test_a_500_is_retried_until_delivered_and_a_silent_endpoint_is_dead_lettered_alone(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    p = f"p-{uuid.uuid4().hex[:8]}"
    key = await team_key(db, p)
    s = fast(settings, fhir_notify_dead_after_s=3.0)
    async with endpoints() as hooks, running(quick(database_url, api_rate_limit_per_s=0)) as api:
        await until(lambda: _registers(api, key, subscription(hooks.add("ok"))), "the key to load")
        flaky = await register(api, key, subscription(hooks.add("flaky", failures=2)))
        silent = await register(api, key, subscription(hooks.add("silent", hang=True)))
        async with pipeline(s):
            await produce(s, detection(p))
            await until(lambda: hooks.hooks["ok"].received, "the healthy endpoint's notification")
            # Delivered while the silent endpoint's first attempt is still timing out.
            assert hooks.hooks["silent"].attempts <= 1
            assert (await notifications(db, silent.json()["id"]))[0]["dead_at"] is None
            await until(lambda: hooks.hooks["flaky"].received, "the flaky endpoint, after 500s")

            async def dead() -> bool:
                rows = await notifications(db, silent.json()["id"])
                return rows[0]["dead_at"] is not None

            await until(dead, "the silent endpoint's notification to be dead-lettered")
        flaky_rows = await notifications(db, flaky.json()["id"])
        assert flaky_rows[0]["attempts"] == 3 and flaky_rows[0]["delivered_at"] is not None
        assert hooks.hooks["flaky"].attempts == 3
        letters = await db.fetch(
            "SELECT * FROM fhir_dead_letters WHERE subscription_id = $1",
            uuid.UUID(silent.json()["id"]),
        )
        assert len(letters) == 1 and letters[0]["last_error"] == "ReadTimeout"
        assert letters[0]["attempts"] >= 2  # retried before it was given up on


async def _registers(api: httpx.AsyncClient, key: str, doc: dict[str, Any]) -> bool:
    return (await register(api, key, doc)).status_code == 201


async def test_a_notifier_killed_mid_delivery_loses_nothing_when_restarted(
    settings: Settings, db: asyncpg.Connection, database_url: str, tmp_path: Any
) -> None:
    p = f"p-{uuid.uuid4().hex[:8]}"
    key = await team_key(db, p)
    s = fast(settings)
    env = {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "VITALS_DATABASE_URL": database_url,
        "VITALS_TOPIC_PREFIX": s.topic_prefix,
        "VITALS_FHIR_NOTIFY_GROUP": s.fhir_notify_group,
        "VITALS_FHIR_NOTIFY_TIMEOUT_S": "2",
        "VITALS_FHIR_NOTIFY_POLL_S": "0.1",
        "VITALS_MIGRATE_ON_START": "false",
    }
    async with endpoints() as hooks, running(quick(database_url, api_rate_limit_per_s=0)) as api:
        await until(lambda: _registers(api, key, subscription(hooks.add("slow", hang=True))),
                    "the key to load")  # fmt: skip
        stop = asyncio.Event()
        sink = asyncio.create_task(run_alerts_sink(s, stop, escalate=False))
        child = stages.start("sink-fhir-notify", env, tmp_path / "notify.log")
        try:
            await produce(s, detection(p))
            await until(lambda: hooks.hooks["slow"].attempts == 1, "the POST under way")
            child.send_signal(signal.SIGKILL)  # mid-delivery: the POST has no answer yet
            child.wait(10)
            hooks.hooks["slow"].hang = False
            child = stages.start("sink-fhir-notify", env, tmp_path / "notify.log")
            await until(lambda: hooks.hooks["slow"].received, "the notification after a restart")
        finally:
            localinfra.stop_process(child)
            stop.set()
            await asyncio.wait_for(sink, 30)
    numbers = {
        p["valueString"]
        for bundle in hooks.hooks["slow"].received
        for p in status_parameters(bundle)["notification-event"]["part"]
        if p["name"] == "event-number"
    }
    assert numbers == {"1"}  # a duplicate, if any, carries the same event number


@pytest.mark.parametrize(
    ("doc", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        ({"resourceType": "Patient"}, 400, "not_a_subscription"),
        ({**subscription("http://h/x"), "criteria": "Observation?code=1"}, 400, "unknown_topic"),
        ({**subscription("http://h/x"), "end": "2030-01-01T00:00:00Z"}, 400, "unsupported_element"),
        ({**subscription("http://h/x"), "reason": ""}, 400, "bad_reason"),
        (subscription("ftp://h/x"), 400, "bad_endpoint"),
        (subscription("http://h/x", content="empty"), 400, "unsupported_content"),
        (subscription("http://h/x", headers=["no colon"]), 400, "bad_header"),
        (
            {
                **subscription("http://h/x"),
                "channel": {**subscription("http://h/x")["channel"], "type": "websocket"},
            },
            400,
            "unsupported_channel",
        ),  # fmt: skip
        (
            {
                **subscription("http://h/x"),
                "_criteria": {
                    "extension": [
                        {"url": fhir_alerts.FILTER_CRITERIA, "valueString": "DetectedIssue?code=x"}
                    ]
                },
            },
            400,
            "unsupported_filter",
        ),  # fmt: skip
    ],
)
async def test_a_subscription_this_server_cannot_honour_is_refused_as_an_operation_outcome(
    doc: Any, status: int, code: str, db: asyncpg.Connection, database_url: str
) -> None:
    key = await team_key(db, f"p-{uuid.uuid4().hex[:8]}")
    async with running(quick(database_url, api_rate_limit_per_s=0)) as api:
        await until(
            lambda: _status(api, key, {"resourceType": "Subscription"}, 400), "the key to load"
        )
        answer = await register(api, key, doc)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == code


async def _status(api: httpx.AsyncClient, key: str, doc: Any, status: int) -> bool:
    return (await register(api, key, doc)).status_code == status


async def test_a_subscription_outside_the_key_or_its_teams_is_refused_and_one_turned_off_is_quiet(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    mine, theirs = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    key, other = await team_key(db, mine), await team_key(db, theirs)
    async with running(quick(database_url, api_rate_limit_per_s=0)) as api:
        await until(lambda: _status(api, key, {"resourceType": "Subscription"}, 400), "load")
        outside = await register(api, key, subscription("http://h/x", patient=theirs))
        assert outside.status_code == 404
        assert outside.json()["issue"][0]["details"]["coding"][0]["code"] == "no_such_patient"
        # The environment's reader token has no scope in the database: it cannot subscribe.
        env_token = await api.post(
            "/fhir/r4/Subscription", content=orjson.dumps(subscription("http://h/x")),
            headers={**AUTH, "Content-Type": "application/fhir+json"},
        )  # fmt: skip
        assert env_token.status_code == 403
        made = await register(api, key, subscription("http://h/x", patient=mine))
        ident = made.json()["id"]
        assert (
            await api.get(f"/fhir/r4/Subscription/{ident}", headers=bearer(other))
        ).status_code == 404
        assert (
            await api.delete(f"/fhir/r4/Subscription/{ident}", headers=bearer(key))
        ).status_code == 204
        off = await api.get(f"/fhir/r4/Subscription/{ident}", headers=bearer(key))
        assert off.json()["status"] == "off"
    s = fast(settings)
    async with pipeline(s):
        await produce(s, detection(mine))
        await until(
            lambda: _alert_published(db, contract.alert_id(mine, "spo2_low", T0)),
            "the alert to be published",
        )
        await asyncio.sleep(2)  # the notifier's chance to queue it (it must not)
    assert await notifications(db, ident) == []


async def _alert_published(db: asyncpg.Connection, alert_id: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT published_at IS NOT NULL FROM alerts WHERE alert_id = $1", uuid.UUID(alert_id)
        )
    )


async def test_a_patient_moved_off_the_team_before_a_retry_is_withdrawn_not_sent(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    p = f"p-{uuid.uuid4().hex[:8]}"
    team = uid("ward")
    await registry_store.add_team(db, team, actor=CLI)
    await registry_store.assign_patients(db, team, [p], assign=True, actor=CLI)
    _, key = await registry_store.issue_key(
        db, "reader", uid("ehr"), expires_at=None, actor=CLI, teams=[team]
    )
    s = fast(settings, fhir_notify_retry_base_s=1.0, fhir_notify_retry_max_s=1.0)
    async with endpoints() as hooks, running(quick(database_url, api_rate_limit_per_s=0)) as api:
        made = await _until_registered(api, key, subscription(hooks.add("down", failures=1000)))
        async with pipeline(s):
            await produce(s, detection(p))
            await until(lambda: hooks.hooks["down"].attempts >= 1, "a first, failed attempt")
            await registry_store.assign_patients(db, team, [p], assign=False, actor=CLI)

            async def withdrawn() -> bool:
                rows = await notifications(db, made["id"])
                return rows[0]["withdrawn_at"] is not None

            await until(withdrawn, "the notification to be withdrawn")
        assert hooks.hooks["down"].received == []
        rows = await notifications(db, made["id"])
        assert rows[0]["delivered_at"] is None and rows[0]["dead_at"] is None


async def _until_registered(api: httpx.AsyncClient, key: str, doc: dict[str, Any]) -> Any:
    made: list[Any] = []

    async def registered() -> bool:
        answer = await register(api, key, doc)
        if answer.status_code == 201:
            made.append(answer.json())
        return bool(made)

    await until(registered, "the key to load and the subscription to be registered")
    return made[0]

"""Acknowledging alerts and recording outcomes through the read API (issue 16).

Real HTTP (uvicorn in this process), real PostgreSQL: alerts are stored and marked
published by the alerts sink's own statements, care teams and keys by the registry's.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.polling import until
from tests.support.readapi import HTML_NOTE, bearer, store_open

pytestmark = pytest.mark.integration

CLI = ("cli", "pytest")


async def _lifecycle(conn: asyncpg.Connection, alert: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT state, level, actor, outcome, note FROM alert_lifecycle WHERE alert_id = $1"
        " ORDER BY state",
        uuid.UUID(alert),
    )
    return [dict(r) for r in rows]


async def _audited(conn: asyncpg.Connection, p: str) -> list[tuple[str, str, int]]:
    # The audit is written in batches (quick(): every 0.05 s).
    rows = await conn.fetch(
        "SELECT route, outcome, status FROM read_audit WHERE patient_id = $1 ORDER BY at", p
    )
    return [(r["route"], r["outcome"], r["status"]) for r in rows]


async def test_acknowledge_once_then_409_with_who_and_nothing_changed(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    path = f"/v1/alerts/{ward['alert']}/acknowledge"

    first = await api.post(path, headers=bearer(ward["key"]))
    assert first.status_code == 201, first.text
    assert first.json()["by"] == ward["principal"] and first.json()["state"] == "acknowledged"
    again = await api.post(path, headers=bearer(ward["key"]), json={})

    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["code"] == "already_acknowledged"
    assert ward["principal"] in again.json()["detail"]
    assert await _lifecycle(db, ward["alert"]) == [
        {"state": "acknowledged", "level": 0, "actor": ward["principal"], "outcome": None,
         "note": None},
    ]  # fmt: skip

    async def recorded() -> bool:
        return len(await _audited(db, ward["mine"])) >= 3  # the read, ok, the conflict

    await until(recorded, "the actions audited", 10)
    audited = await _audited(db, ward["mine"])
    assert ("alerts/acknowledged", "ok", 200) in audited
    assert ("alerts/acknowledged", "already_acknowledged", 409) in audited


async def test_a_resolved_alert_cannot_be_acknowledged_but_takes_an_outcome(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    resolved = await store_open(db, ward["mine"], resolved=True)

    refused = await api.post(f"/v1/alerts/{resolved}/acknowledge", headers=bearer(ward["key"]))
    concluded = await api.post(
        f"/v1/alerts/{resolved}/outcome", headers=bearer(ward["key"]),
        json={"outcome": "sensor_problem"},
    )  # fmt: skip

    assert refused.status_code == 409 and refused.json()["code"] == "alert_resolved"
    assert concluded.status_code == 201, concluded.text
    assert [r["state"] for r in await _lifecycle(db, resolved)] == ["outcome"]


async def test_another_teams_alert_and_an_unknown_one_are_the_same_404(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    answers = [
        await api.post(f"/v1/alerts/{alert}/{action}", headers=bearer(ward["key"]), json=body)
        for alert in (ward["their_alert"], str(uuid.uuid4()))
        for action, body in (("acknowledge", {}), ("outcome", {"outcome": "advised"}))
    ]

    assert {(a.status_code, a.json()["code"]) for a in answers} == {(404, "no_such_alert")}
    assert {a.json()["detail"] for a in answers} == {
        "no alert with this id in this reader's care teams"
    }
    assert ward["theirs"] not in "".join(a.text for a in answers)
    assert await _lifecycle(db, ward["their_alert"]) == []


@pytest.mark.parametrize(
    ("action", "body", "status", "code"),
    [
        ("outcome", {"outcome": "fine"}, 400, "bad_outcome"),
        ("outcome", {}, 400, "bad_outcome"),
        ("outcome", {"outcome": "advised", "note": 5}, 400, "bad_note"),
        ("outcome", {"outcome": "advised", "note": "x" * 2001}, 400, "bad_note"),
        ("outcome", {"outcome": "advised", "ward": "4B"}, 400, "unknown_field"),
        ("outcome", b'{"outcome": "advised", "outcome": "false_alarm"}', 400, "malformed_json"),
        ("outcome", b"[1]", 400, "malformed_json"),
        ("outcome", b"NaN", 400, "malformed_json"),
        ("acknowledge", b"not json", 400, "malformed_json"),
        ("acknowledge", b"{" + b" " * 20_000 + b"}", 413, "body_too_large"),
    ],
)
async def test_bad_bodies_are_400_problems_and_change_nothing(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
    action: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    content = body if isinstance(body, bytes) else None
    answer = await api.post(
        f"/v1/alerts/{ward['alert']}/{action}", headers=bearer(ward["key"]),
        content=content, json=None if content is not None else body,
    )  # fmt: skip

    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert await _lifecycle(db, ward["alert"]) == []


async def test_a_bad_alert_id_and_a_missing_key(api: httpx.AsyncClient) -> None:
    bad = await api.post("/v1/alerts/episode-7/acknowledge", headers=bearer("x" * 12))
    assert bad.status_code == 401  # the credential first
    missing = await api.post(f"/v1/alerts/{uuid.uuid4()}/acknowledge")
    assert missing.status_code == 401 and missing.json()["code"] == "missing_credential"


async def test_a_bad_alert_id_is_400(api: httpx.AsyncClient, ward: dict[str, Any]) -> None:
    bad = await api.post("/v1/alerts/episode-7/acknowledge", headers=bearer(ward["key"]))
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_alert_id")


async def test_an_outcome_with_markup_is_stored_verbatim_once_and_never_logged(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = f"/v1/alerts/{ward['alert']}/outcome"
    caplog.set_level(logging.DEBUG)

    first = await api.post(
        path, headers=bearer(ward["key"]), json={"outcome": "advised", "note": HTML_NOTE}
    )
    second = await api.post(path, headers=bearer(ward["key"]), json={"outcome": "false_alarm"})

    assert first.status_code == 201 and first.json()["outcome"] == "advised"
    assert "note" not in first.json()
    assert (second.status_code, second.json()["code"]) == (409, "outcome_already_recorded")
    assert await _lifecycle(db, ward["alert"]) == [
        {"state": "outcome", "level": 0, "actor": ward["principal"], "outcome": "advised",
         "note": HTML_NOTE},
    ]  # fmt: skip
    assert "onerror" not in caplog.text and ward["mine"] not in caplog.text


async def test_open_alerts_are_the_teams_own_with_acknowledgement_until_an_outcome(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    await store_open(db, ward["mine"], resolved=True)  # resolved: not open

    async def listed() -> list[dict[str, Any]]:
        answer = await api.get("/v1/alerts", params={"state": "open"}, headers=bearer(ward["key"]))
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    before = await listed()
    await api.post(f"/v1/alerts/{ward['alert']}/acknowledge", headers=bearer(ward["key"]))
    acknowledged = await listed()
    await api.post(
        f"/v1/alerts/{ward['alert']}/outcome", headers=bearer(ward["key"]),
        json={"outcome": "contacted_no_action"},
    )  # fmt: skip
    after = await listed()

    assert [(i["alert_id"], i["patient_id"]) for i in before] == [(ward["alert"], ward["mine"])]
    assert before[0]["acknowledged_by"] is None and before[0]["escalation_level"] == 0
    assert timedelta(seconds=before[0]["open_s"]) < timedelta(minutes=5)
    assert acknowledged[0]["acknowledged_by"] == ward["principal"]
    assert after == []
    for query in ({"state": "opened"}, {"limit": "0"}, {"ward": "4B"}):
        bad = await api.get("/v1/alerts", params=query, headers=bearer(ward["key"]))
        assert bad.status_code == 400, query

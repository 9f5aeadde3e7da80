"""The reads behind the console's patient and alarm-burden views (issue 16): a patient's
alert history with acknowledgements and outcomes, its device bindings, and the alarm
burden of a reader's care teams, computed in SQL over known data. Real HTTP, real
PostgreSQL; alerts stored by the alerts sink's own statements."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from frontdoor import registry_store
from sinks.alerts import store
from tests.support.cli import CLI
from tests.support.ids import patient, uid
from tests.support.polling import until
from tests.support.readapi import HTML_NOTE, bearer, iso, row, store_rows
from vitals import contract

pytestmark = pytest.mark.integration

H = timedelta(hours=1)


async def store_alert(
    conn: asyncpg.Connection,
    p: str,
    rule: str,
    start: datetime,
    *,
    severity: str = "high",
    suppressed: bool = False,
) -> uuid.UUID:
    """An opened alert of `p` whose episode starts at `start`, published 10 s later."""
    ms = int(start.timestamp() * 1000)
    detection = contract.Detection(
        alert_id=contract.alert_id(p, rule, ms), patient_id=p, rule=rule, severity=severity,
        episode_start=ms, retrospective=False, metric="spo2", device_id="w1", value=87.0,
        state="opened", at=ms, detected=ms + 5,
    )  # fmt: skip
    rows = [store.row_of(detection)]
    await store.store(conn, rows)
    await store.mark_published(conn, store.keys_of(rows), start + timedelta(seconds=10))
    if suppressed:
        await conn.execute("UPDATE alerts SET suppressed = true WHERE alert_id = $1", rows[0][0])
    return uuid.UUID(detection.alert_id)


async def human(
    conn: asyncpg.Connection,
    alert: uuid.UUID,
    state: str,
    after_s: float,
    *,
    level: int = 0,
    outcome: str | None = None,
    note: str | None = None,
) -> None:
    """A human state `after_s` seconds after the alert's publication."""
    actor = (None, None) if state == "escalated" else ("k1", "nurse-a")
    await conn.execute(
        "INSERT INTO alert_lifecycle (alert_id, state, level, patient_id, episode_start, at,"
        " actor_key_id, actor, outcome, note)"
        " SELECT alert_id, $2, $3, patient_id, episode_start,"
        " published_at + make_interval(secs => $4), $5, $6, $7, $8"
        " FROM alerts WHERE alert_id = $1 AND state = 'opened'",
        alert, state, level, after_s, *actor, outcome, note,
    )  # fmt: skip


async def test_the_alert_history_holds_acknowledgement_escalation_and_outcome(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    mine, key = ward["mine"], ward["key"]
    alert = uuid.UUID(ward["alert"])
    await human(db, alert, "escalated", 300, level=1)
    await human(db, alert, "acknowledged", 400)
    await human(db, alert, "outcome", 500, outcome="false_alarm", note=HTML_NOTE)
    later = await store_alert(db, mine, "hr_high", datetime.now(UTC) - timedelta(seconds=5))

    answer = await api.get(f"/v1/patients/{mine}/alert-history", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["alert_id"] for i in items] == [str(later), str(alert)]  # newest first
    assert items[0]["escalation_level"] == 0 and items[0]["outcome"] is None
    first = items[1]
    assert first["acknowledged_by"] == "nurse-a" and first["escalation_level"] == 1
    assert first["outcome"] == "false_alarm" and first["note"] == HTML_NOTE
    assert first["outcome_by"] == "nurse-a" and first["resolved_at"] is None

    paged = await api.get(
        f"/v1/patients/{mine}/alert-history", params={"limit": 1}, headers=bearer(key)
    )
    rest = await api.get(
        f"/v1/patients/{mine}/alert-history",
        params={"limit": 1, "cursor": paged.json()["next_cursor"]},
        headers=bearer(key),
    )
    assert [i["alert_id"] for i in paged.json()["items"] + rest.json()["items"]] == [
        str(later), str(alert)
    ]  # fmt: skip
    assert rest.json()["next_cursor"] is None


async def test_history_and_devices_are_refused_outside_the_team_and_audited(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    mine, theirs, key = ward["mine"], ward["theirs"], ward["key"]
    device = uid("dev")
    await db.execute("INSERT INTO devices (device_id) VALUES ($1)", device)
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO device_patients (device_id, patient_id, valid_from, valid_to)"
        " VALUES ($1, 'p-before', $2, $3), ($1, $4, $3, NULL)",
        device, now - 48 * H, now - 24 * H, mine,
    )  # fmt: skip

    bound = await api.get(f"/v1/patients/{mine}/devices", headers=bearer(key))
    assert bound.status_code == 200, bound.text
    assert [(d["device_id"], d["current"]) for d in bound.json()["items"]] == [(device, True)]
    for route in ("alert-history", "devices"):
        other = await api.get(f"/v1/patients/{theirs}/{route}", headers=bearer(key))
        assert other.status_code == 404 and other.json()["code"] == "no_such_patient"
        anonymous = await api.get(f"/v1/patients/{mine}/{route}")
        assert anonymous.status_code == 401
    extra = await api.get(f"/v1/patients/{mine}/devices", params={"x": 1}, headers=bearer(key))
    assert extra.status_code == 400 and extra.json()["code"] == "unknown_parameter"
    forged = await api.get(
        f"/v1/patients/{mine}/alert-history", params={"cursor": "abc.def"}, headers=bearer(key)
    )
    assert forged.status_code == 400 and forged.json()["code"] == "bad_cursor"

    async def audited() -> bool:
        rows = await db.fetch(
            "SELECT route, status FROM read_audit WHERE patient_id = ANY($1)", [mine, theirs]
        )
        seen = {(r["route"], r["status"]) for r in rows}
        return {("devices", 200), ("devices", 404), ("alert-history", 404)} <= seen

    await until(audited, "the reads and refusals audited", 10)


async def test_the_alarm_burden_of_a_team_over_a_range_from_known_data(
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    team, stranger = uid("ward"), patient()
    a, b = patient(), patient()
    await registry_store.add_team(db, team, actor=CLI)
    await registry_store.assign_patients(db, team, [a, b], assign=True, actor=CLI)
    _, key = await registry_store.issue_key(
        db, "reader", f"nurse-{team}", expires_at=None, actor=CLI, teams=[team]
    )
    day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 3 * 24 * H
    # Patient-days: a on two UTC days, b on one; the stranger's are not the team's.
    await store_rows(
        database_url,
        [row(a, "spo2", day0 + H, 95.0), row(a, "spo2", day0 + 25 * H, 94.0),
         row(b, "heart_rate", day0 + 2 * H, 80.0), row(stranger, "spo2", day0 + H, 90.0)],
    )  # fmt: skip
    a1 = await store_alert(db, a, "spo2_low", day0 + 3 * H)
    a2 = await store_alert(db, a, "spo2_low", day0 + 4 * H)
    a3 = await store_alert(db, a, "spo2_low", day0 + 26 * H)
    b1 = await store_alert(db, b, "hr_high", day0 + 5 * H, severity="medium")
    await store_alert(db, a, "spo2_low", day0 + 6 * H, suppressed=True)  # not paged
    await store_alert(db, a, "spo2_low", day0 + 50 * H)  # after the range
    await store_alert(db, stranger, "spo2_low", day0 + 3 * H)  # another team's
    await human(db, a1, "acknowledged", 60)
    await human(db, a1, "outcome", 600, outcome="false_alarm")
    await human(db, a2, "outcome", 120, outcome="false_alarm")  # answered without an ack
    await human(db, a3, "escalated", 100, level=1)
    await human(db, a3, "acknowledged", 300)
    await human(db, a3, "outcome", 900, outcome="advised")
    await human(db, b1, "escalated", 900, level=1)
    await human(db, b1, "escalated", 2700, level=2)
    span = {"from": iso(day0), "to": iso(day0 + 48 * H)}

    async def loaded() -> bool:
        answer = await api.get("/v1/burden", params=span, headers=bearer(key))
        return answer.status_code == 200

    await until(loaded, "the team key loaded", 10)
    body = (await api.get("/v1/burden", params=span, headers=bearer(key))).json()

    assert body["patient_days"] == 3
    rules = {r["rule"]: r for r in body["rules"]}
    assert set(rules) == {"spo2_low", "hr_high"}
    spo2 = rules["spo2_low"]
    assert (spo2["alerts"], spo2["patients"], spo2["per_patient_day"]) == (3, 1, 1.0)
    assert (spo2["answered"], spo2["unanswered"]) == (3, 0)
    # Answers at 60, 120, 300 s: median 120; p90 (interpolated) 120 + 0.8 * 180 = 264.
    assert (spo2["ack_p50_s"], spo2["ack_p90_s"]) == (120.0, 264.0)
    assert (spo2["escalated"], spo2["highest_level"], spo2["with_outcome"]) == (1, 1, 3)
    assert spo2["outcomes"]["false_alarm"] == 2 and spo2["outcomes"]["advised"] == 1
    assert spo2["outcome_shares"]["false_alarm"] == 0.667
    assert spo2["outcome_shares"]["advised"] == 0.333
    hr = rules["hr_high"]
    assert (hr["alerts"], hr["per_patient_day"], hr["answered"], hr["unanswered"]) == (
        1, 0.333, 0, 1
    )  # fmt: skip
    assert hr["ack_p50_s"] is None and hr["outcome_shares"]["false_alarm"] is None
    assert (hr["escalated"], hr["highest_level"]) == (1, 2)
    total = body["total"]
    assert (total["alerts"], total["per_patient_day"], total["escalated"]) == (4, 1.333, 2)

    async def audited() -> bool:
        rows = await db.fetch(
            "SELECT DISTINCT patient_id FROM read_audit WHERE route = 'burden'"
            " AND patient_id = ANY($1)",
            [a, b, stranger],
        )
        return {r["patient_id"] for r in rows} == {a, b}

    await until(audited, "one audit record per patient of the answer", 10)


async def test_burden_parameters_are_refused(
    api: httpx.AsyncClient,
    ward: dict[str, Any],
) -> None:
    key, now = ward["key"], datetime.now(UTC)
    cases = [
        ({"from": iso(now - 100 * 24 * H), "to": iso(now)}, "bad_range"),
        ({"from": iso(now), "to": iso(now - H)}, "bad_range"),
        ({"from": "yesterday"}, "bad_time"),
        ({"ward": "4B"}, "unknown_parameter"),
    ]
    for query, code in cases:
        answer = await api.get("/v1/burden", params=query, headers=bearer(key))
        assert answer.status_code == 400 and answer.json()["code"] == code, (query, answer.text)
    assert (await api.get("/v1/burden")).status_code == 401

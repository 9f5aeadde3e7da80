"""Who may read whom through the read API, and every read on record (issue 13, finding 2).

Real HTTP (uvicorn in this process), real PostgreSQL: care teams and reader keys are made
by the registry's own functions and the `vitals` command, reads are recorded by the API's
own audit writer, and `vitals audit verify|reads` read them back.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg
import httpx
import pytest

from frontdoor import registry_store
from tests.support import cli
from tests.support.ids import patient, uid
from tests.support.polling import until
from tests.support.readapi import (
    AUTH,
    T0,
    bearer,
    iso,
    quick,
    row,
    running,
    store_alerts,
    store_rows,
)
from vitals.settings import Settings

pytestmark = pytest.mark.integration

CLI = ("cli", "pytest")
M, H = timedelta(minutes=1), timedelta(hours=1)
WINDOW = {"from": iso(T0), "to": iso(T0 + H)}
# Every route that reads a patient's data, with parameters that are valid for it.
ROUTES = {
    "readings": {"metric": "spo2", **WINDOW, "resolution": "raw"},
    "alerts": {},
    "news2": {"at": iso(T0)},
    "news2/history": {},
    "alert-history": {},  # the console's patient view (readapi/history.py)
    "devices": {},
}


async def status_of(client: httpx.AsyncClient, key: str, p: str, route: str) -> tuple[int, str]:
    answer = await client.get(
        f"/v1/patients/{p}/{route}", params=ROUTES[route], headers=bearer(key)
    )
    code = answer.json().get("code", "") if answer.status_code != 200 else ""
    return answer.status_code, code


async def readable(client: httpx.AsyncClient, key: str, p: str) -> bool:
    return (await status_of(client, key, p, "alerts"))[0] == 200


# --- care teams --------------------------------------------------------------------------


async def test_a_team_reader_reads_its_patients_and_gets_404_for_every_other_on_every_route(
    database_url: str, db: asyncpg.Connection
) -> None:
    ward, other_ward = uid("ward"), uid("ward")
    mine, theirs, unassigned = patient(), patient(), patient()
    for team in (ward, other_ward):
        await registry_store.add_team(db, team, actor=CLI)
    await registry_store.assign_patients(db, ward, [mine], assign=True, actor=CLI)
    await registry_store.assign_patients(db, other_ward, [theirs], assign=True, actor=CLI)
    _, team_key = await registry_store.issue_key(
        db, "reader", "ward-console", expires_at=None, actor=CLI, teams=[ward]
    )
    _, research_key = await registry_store.issue_key(
        db, "reader", "research-export", expires_at=None, actor=CLI, all_patients=True
    )
    for p in (mine, theirs):
        await store_rows(database_url, [row(p, "spo2", T0 + M, 95.0)])
        await store_alerts(database_url, p, [T0])

    async with running(quick(database_url)) as client:
        await until(lambda: readable(client, team_key, mine), "the team key loaded", 10)
        for route in ROUTES:
            # news2: nothing scored for them, but the patient is readable (not no_such_patient).
            expected = (404, "news2_not_available") if route == "news2" else (200, "")
            assert await status_of(client, team_key, mine, route) == expected, route
            for stranger in (theirs, unassigned):
                assert await status_of(client, team_key, stranger, route) == (
                    404,
                    "no_such_patient",
                ), route
            assert await status_of(client, research_key, theirs, route) == expected, route
        # The answer is the same whatever the parameters: a 404 comes before any 400, so a
        # reader cannot tell a patient it may not read from one that does not exist.
        bad = await client.get(
            f"/v1/patients/{theirs}/readings", params={"metric": "mood"}, headers=bearer(team_key)
        )
        assert bad.status_code == 404 and bad.json()["code"] == "no_such_patient"
        assert bad.headers["content-type"] == "application/problem+json"
        assert theirs not in bad.text
        items = (
            await client.get(
                f"/v1/patients/{mine}/readings", params=ROUTES["readings"], headers=bearer(team_key)
            )
        ).json()["items"]
        assert [i["value"] for i in items] == [95.0]
        # The static reader of VITALS_READER_CREDENTIALS (make run) reads every patient.
        static = await client.get(f"/v1/patients/{theirs}/alerts", headers=AUTH)
        assert static.status_code == 200 and len(static.json()["items"]) == 2

        # Scope changes apply within a reload: theirs joins the ward, mine leaves it.
        await registry_store.assign_patients(db, ward, [theirs], assign=True, actor=CLI)
        await registry_store.assign_patients(db, ward, [mine], assign=False, actor=CLI)

        # Two transactions: a reload may fall between them, so wait for both to apply.
        async def applied() -> bool:
            return await readable(client, team_key, theirs) and not await readable(
                client, team_key, mine
            )

        await until(applied, "the assignment and the removal applied", 10)
        assert await status_of(client, team_key, mine, "readings") == (404, "no_such_patient")


async def test_reader_keys_need_a_scope_and_known_teams(db: asyncpg.Connection) -> None:
    from frontdoor.errors import NotFound, RegistryConflict

    with pytest.raises(RegistryConflict, match="teams, or for all patients"):
        await registry_store.issue_key(db, "reader", "r", expires_at=None, actor=CLI)
    with pytest.raises(RegistryConflict, match="teams, or for all patients"):
        await registry_store.issue_key(
            db, "reader", "r", expires_at=None, actor=CLI, teams=["t"], all_patients=True
        )
    with pytest.raises(RegistryConflict, match="only reader keys"):
        await registry_store.issue_key(
            db, "gateway", "g", expires_at=None, actor=CLI, all_patients=True
        )
    before = await db.fetchval("SELECT count(*) FROM api_keys")
    with pytest.raises(NotFound, match="no care team"):
        await registry_store.issue_key(
            db, "reader", "r", expires_at=None, actor=CLI, teams=[uid("nowhere")]
        )
    assert await db.fetchval("SELECT count(*) FROM api_keys") == before  # all or nothing
    with pytest.raises(NotFound, match="no care team"):
        await registry_store.assign_patients(db, uid("nowhere"), ["p-1"], assign=True, actor=CLI)
    team = uid("ward")
    await registry_store.add_team(db, team, actor=CLI)
    with pytest.raises(RegistryConflict, match="exists already"):
        await registry_store.add_team(db, team, actor=CLI)


def test_the_cli_manages_teams_and_issues_scoped_reader_keys(database_url: str) -> None:
    def vitals(*args: str, code: int = 0) -> str:
        done = cli.vitals(*args, database_url=database_url, code=code)
        return done.stdout + done.stderr

    team, p1, p2 = uid("ward"), patient(), patient()
    assert f"added {team}" in vitals("teams", "add", team)
    assert "assigned 2 patient(s)" in vitals("teams", "assign", team, p1, p2)
    assert "assigned 0 patient(s)" in vitals("teams", "assign", team, p1)  # already there
    assert "unassigned 1 patient(s)" in vitals("teams", "unassign", team, p2)
    listed = vitals("teams", "list")
    assert f'"team_id":"{team}"' in listed and f'"patients":["{p1}"]' in listed
    assert "no care team" in vitals("teams", "assign", uid("nowhere"), p1, code=1)
    assert "exists already" in vitals("teams", "add", team, code=1)
    assert "the team id" in vitals("teams", "add", "bad\u202eteam", code=1)

    issued = vitals("readers", "issue", "ward-console", "--team", team)
    key_id = issued.split("key_id: ")[1].split()[0]
    assert "all patients" not in issued
    wide = vitals("readers", "issue", "research", "--all-patients")
    assert "scope:  all patients" in wide
    # A scope is required, and only one kind of it (argparse: exit 2).
    assert "--team" in vitals("readers", "issue", "nobody", code=2)
    assert "not allowed" in vitals(
        "readers", "issue", "both", "--team", team, "--all-patients", code=2
    )
    assert "no care team" in vitals("readers", "issue", "x", "--team", uid("nowhere"), code=1)
    assert key_id in vitals("readers", "list")


async def test_team_changes_are_audited_without_patient_ids(
    database_url: str, db: asyncpg.Connection
) -> None:
    team, p = uid("ward"), patient()
    await registry_store.add_team(db, team, actor=CLI)
    assert await registry_store.assign_patients(db, team, [p], assign=True, actor=CLI) == 1
    key_id, _ = await registry_store.issue_key(
        db, "reader", "research", expires_at=None, actor=CLI, all_patients=True
    )
    rows = await db.fetch(
        "SELECT action, detail FROM audit_log WHERE detail->>'team_id' = $1 ORDER BY id", team
    )
    assert [r["action"] for r in rows] == ["team_added", "patients_assigned"]
    assert p not in repr([dict(r) for r in rows])
    detail = await db.fetchval(
        "SELECT detail::text FROM audit_log WHERE detail->>'key_id' = $1", key_id
    )
    assert '"all_patients": true' in detail  # an all-patients key is on record as such


# --- the read audit ----------------------------------------------------------------------


async def test_every_read_is_audited_and_the_chain_verifies_until_a_row_is_edited(
    fresh_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await asyncpg.connect(fresh_url)
    try:
        team, mine, theirs = uid("ward"), patient(), patient()
        await registry_store.add_team(db, team, actor=CLI)
        await registry_store.assign_patients(db, team, [mine], assign=True, actor=CLI)
        key_id, key = await registry_store.issue_key(
            db, "reader", "ward-console", expires_at=None, actor=CLI, teams=[team]
        )
        await store_rows(fresh_url, [row(mine, "spo2", T0 + i * M, 95.0) for i in range(3)])
        caplog.set_level(logging.DEBUG)
        async with running(quick(fresh_url)) as client:
            await until(lambda: readable(client, key, mine), "the key loaded", 10)
            path = f"/v1/patients/{mine}/readings"
            assert (
                await client.get(path, params=ROUTES["readings"], headers=bearer(key))
            ).is_success
            bad = await client.get(path, params={"metric": "mood"}, headers=bearer(key))
            assert bad.status_code == 400
            denied = await client.get(f"/v1/patients/{theirs}/alerts", headers=bearer(key))
            assert denied.status_code == 404
            await asyncio.sleep(0.3)  # a few flushes
        # Each patient's reads, as `vitals audit reads` answers "who read this patient".
        seen = await db.fetch(
            "SELECT route, outcome, status, row_count, reader, reader_key_id FROM read_audit"
            " WHERE patient_id = $1 AND reader_key_id = $2 ORDER BY seq",
            mine,
            key_id,
        )
        assert [tuple(r)[:4] for r in seen][-2:] == [
            ("readings", "ok", 200, 3),
            ("readings", "unknown_metric", 400, 0),
        ]
        assert {r["reader"] for r in seen} == {"ward-console"}
        (refused,) = await db.fetch(
            "SELECT route, outcome, status FROM read_audit WHERE patient_id = $1", theirs
        )
        assert tuple(refused) == ("alerts", "no_such_patient", 404)
        # The API's logs never carry a patient id (the test's own HTTP client logs URLs).
        ours = [r for r in caplog.records if r.name.split(".")[0] in ("ingest", "uvicorn")]
        assert ours and not [
            r for r in ours if mine in str(r.__dict__) or theirs in str(r.__dict__)
        ]

        def vitals(*args: str, code: int = 0) -> str:
            return cli.vitals(*args, database_url=fresh_url, code=code).stdout

        reads = vitals(
            "audit", "reads", "--patient", mine, "--from", iso(T0), "--to", "9999-01-01T00:00:00Z"
        )
        assert reads.count('"reader":"ward-console"') == len(seen)
        assert f'"reader_key_id":"{key_id}"' in reads and theirs not in reads
        total = await db.fetchval("SELECT count(*) FROM read_audit")
        assert vitals("audit", "verify").strip() == f"read audit intact: {total} rows"

        # Append-only, even for the db...
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute("UPDATE read_audit SET row_count = 0")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute("DELETE FROM read_audit")
        # ...unless a superuser turns the guard off: then the chain shows the edit.
        writer, seq = await db.fetchrow(
            "SELECT writer, seq FROM read_audit WHERE patient_id = $1 AND row_count = 3", mine
        )
        await db.execute("ALTER TABLE read_audit DISABLE TRIGGER read_audit_append_only")
        await db.execute(
            "UPDATE read_audit SET row_count = 0 WHERE writer = $1 AND seq = $2", writer, seq
        )
        broken = vitals("audit", "verify", code=1)
        assert f"BROKEN at writer {writer} row {seq}: the row does not match its hash" in broken
        # A deleted row breaks the link at the row that went missing.
        await db.execute(
            "UPDATE read_audit SET row_count = 3 WHERE writer = $1 AND seq = $2", writer, seq
        )
        assert "intact" in vitals("audit", "verify")
        await db.execute("DELETE FROM read_audit WHERE writer = $1 AND seq = $2", writer, seq)
        assert f"row {seq}: row {seq} missing" in vitals("audit", "verify", code=1)
    finally:
        await db.close()


async def test_reads_are_refused_with_503_while_they_cannot_be_recorded(fresh_url: str) -> None:
    """The read audit's table is gone (its writes fail): reads are served until the queue
    of unwritten records is full, then refused, never served off the record."""
    db = await asyncpg.connect(fresh_url)
    try:
        await db.execute("DROP TABLE read_audit")
    finally:
        await db.close()
    async with running(quick(fresh_url, audit_queue_max=2)) as client:
        path = "/v1/patients/p-1/alerts"
        assert [(await client.get(path, headers=AUTH)).status_code for _ in range(2)] == [200, 200]
        refused = await client.get(path, headers=AUTH)
        assert refused.status_code == 503 and refused.json()["code"] == "audit_unavailable"
        assert refused.headers["retry-after"] == "5"


# --- limits --------------------------------------------------------------------------------


async def test_a_reader_over_its_rate_is_429_with_retry_after_and_others_are_not(
    database_url: str, db: asyncpg.Connection
) -> None:
    _, other = await registry_store.issue_key(
        db, "reader", "other", expires_at=None, actor=CLI, all_patients=True
    )
    settings = quick(database_url, api_rate_limit_per_s=0.5, api_rate_limit_burst=2)
    async with running(settings) as client:
        await until(lambda: readable(client, other, "p-1"), "the key loaded", 10)  # other: 1 of 2
        path = "/v1/patients/p-1/alerts"
        assert [(await client.get(path, headers=AUTH)).status_code for _ in range(2)] == [200, 200]
        limited = await client.get(path, headers=AUTH)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert limited.headers["retry-after"] == "2"
        assert (await client.get(path, headers=bearer(other))).status_code == 200


async def test_a_reader_over_its_rows_a_minute_is_429_after_the_read_that_overdrew(
    database_url: str,
) -> None:
    p = patient()
    await store_rows(database_url, [row(p, "spo2", T0 + i * M, 95.0) for i in range(50)])
    settings = quick(database_url, api_rows_per_minute=60, api_rate_limit_per_s=0)
    async with running(settings) as client:
        path = f"/v1/patients/{p}/readings"
        first = await client.get(path, params=ROUTES["readings"], headers=AUTH)  # 50 of 60
        assert len(first.json()["items"]) == 50
        second = await client.get(path, params=ROUTES["readings"], headers=AUTH)  # 100: overdrawn
        assert second.status_code == 200
        limited = await client.get(path, params=ROUTES["readings"], headers=AUTH)
        assert limited.status_code == 429 and limited.json()["code"] == "row_limit"
        assert 30 <= int(limited.headers["retry-after"]) <= 41  # 40 rows owed at 1 a second


async def test_cursors_are_bound_to_their_patient(database_url: str) -> None:
    """A cursor issued for one patient's page is refused on another patient's route,
    though the metric and resolution are the same, and a cursor from another API process
    (another key) is refused too."""
    p, q = patient(), patient()
    for who in (p, q):
        await store_rows(database_url, [row(who, "spo2", T0 + i * M, 95.0) for i in range(3)])
    query = {**ROUTES["readings"], "limit": 1}
    async with running(quick(database_url)) as client:
        page = (await client.get(f"/v1/patients/{p}/readings", params=query, headers=AUTH)).json()
        cursor = page["next_cursor"]
        nxt = await client.get(
            f"/v1/patients/{p}/readings", params={**query, "cursor": cursor}, headers=AUTH
        )
        assert nxt.status_code == 200
        foreign = await client.get(
            f"/v1/patients/{q}/readings", params={**query, "cursor": cursor}, headers=AUTH
        )
        assert foreign.status_code == 400 and foreign.json()["code"] == "bad_cursor"
    async with running(quick(database_url)) as another:  # another process, another key
        elsewhere = await another.get(
            f"/v1/patients/{p}/readings", params={**query, "cursor": cursor}, headers=AUTH
        )
        assert elsewhere.status_code == 400 and elsewhere.json()["code"] == "bad_cursor"


def test_a_short_cursor_key_is_refused() -> None:
    with pytest.raises(ValueError, match="api_cursor_key must be 32"):
        Settings(api_cursor_key="short")

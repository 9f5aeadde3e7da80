"""Gateway security over real HTTP, a real broker and a real PostgreSQL registry.

Keys are issued into the test database, the gateway loads them (and the device registry)
into memory, and every refusal is checked to have produced nothing on the readings topic.
The attacks tried here are the table in docs/security.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from frontdoor import registry_store
from frontdoor.audit import AuditTrail
from frontdoor.refresher import RegistryCache
from ingest.app import create_app
from ingest.server import build_server
from tests.support import cli
from tests.support.cli import CLI
from tests.support.gateway import assert_problem
from tests.support.ids import uid
from tests.support.metrics import metric_value, sample
from tests.support.polling import eventually
from tests.support.secured_gateway import T0, Gateway, bearer, body, issue, running, secured
from tests.support.serving import serving
from tests.support.topics import produced
from vitals import contract
from vitals.errors import ConfigError
from vitals.logs import JsonFormatter
from vitals.settings import Settings
from vitalsctl import simulate

pytestmark = pytest.mark.integration


# --- gateway identity ----------------------------------------------------------------


async def test_an_issued_key_is_accepted_and_its_gateway_is_on_the_message(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    response = await gateway.post(fleet["key_a"], body(fleet["device"], fleet["patient"]))
    assert response.status_code == 202, response.text
    (record,) = await produced(settings)
    assert contract.decode_upload(record.value).gateway_id == fleet["gw_a"]


async def test_keys_are_stored_only_as_sha256_digests(
    db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    stored = await db.fetch("SELECT key_sha256::text AS h, key_id FROM api_keys")
    text = repr([dict(r) for r in stored])
    # vk_<key_id>_<secret>: the secret (token_urlsafe, so it may hold "_" itself) is never
    # stored; splitting on every "_" took its last fragment, sometimes one character.
    secret = fleet["key_a"].split("_", 2)[2]
    assert len(secret) == 43
    assert fleet["key_a"] not in text and secret not in text
    columns = await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'api_keys'"
    )
    assert {c["column_name"] for c in columns} == {
        "key_id",
        "kind",
        "principal",
        "key_sha256",
        "created_at",
        "expires_at",
        "revoked_at",
        "all_patients",  # a reader key's scope (0010)
    }


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("vk_0000abcd_" + "A" * 43, "invalid_credential"),  # forged: well-formed, never issued
        ("", "missing_credential"),
    ],
)
async def test_a_forged_or_missing_key_is_401(
    gateway: Gateway, settings: Settings, fleet: dict[str, str], key: str, code: str
) -> None:
    response = await gateway.post(key, body(fleet["device"], fleet["patient"]))
    assert_problem(response, 401, code)
    assert response.headers["www-authenticate"].startswith('Bearer realm="vitals"')
    assert await produced(settings) == []


async def test_an_expired_key_is_401_at_once_without_a_reload(
    settings: Settings, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    key = await issue(db, fleet["gw_a"], expires_at=soon)
    async with running(secured(settings)) as gw:
        content = body(fleet["device"], fleet["patient"])
        assert (await gw.post(key, content)).status_code == 202
        await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
        assert_problem(await gw.post(key, content), 401, "expired_credential")
    assert len(await produced(settings)) == 1


async def test_rotation_two_keys_work_then_the_revoked_one_stops_within_a_refresh(
    settings: Settings, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    content = body(fleet["device"], fleet["patient"])
    async with running(secured(settings, registry_refresh_s=0.2)) as gw:
        new_key = await issue(db, fleet["gw_a"])  # rotation: a second live key
        old_id = fleet["key_a"].split("_")[1]

        async def new_key_works() -> bool:
            return (await gw.post(new_key, content)).status_code == 202

        await eventually(new_key_works, 5)
        assert (await gw.post(fleet["key_a"], content)).status_code == 202
        await registry_store.revoke_key(db, old_id, actor=CLI)

        async def old_key_refused() -> bool:
            return (await gw.post(fleet["key_a"], content)).status_code == 401

        await eventually(old_key_refused, 5)
        assert_problem(await gw.post(fleet["key_a"], content), 401, "revoked_credential")
        assert (await gw.post(new_key, content)).status_code == 202


async def test_the_last_good_registry_is_kept_when_the_database_is_down(
    database_url: str, fleet: dict[str, str]
) -> None:
    cache = RegistryCache({})
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    assert await cache.refresh(pool)
    await pool.close()
    gone = database_url.rsplit("/", 1)[0] + "/no_such_database"
    broken = await asyncpg.create_pool(gone, min_size=0, max_size=1)
    try:
        assert not await cache.refresh(broken)
    finally:
        await broken.close()
    snapshot = cache.current()
    assert snapshot.loaded and fleet["device"] in snapshot.devices


async def test_admin_tokens_and_gateway_keys_do_not_open_each_others_doors(
    gateway: Gateway, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    _, admin_key = await registry_store.issue_key(db, "admin", "ops", expires_at=None, actor=CLI)
    await gateway.reload()
    content = body(fleet["device"], fleet["patient"])
    assert_problem(await gateway.post(admin_key, content), 401, "invalid_credential")
    listing = await gateway.client.get("/v1/admin/devices", headers=bearer(fleet["key_a"]))
    assert_problem(listing, 401, "invalid_credential")
    assert (await gateway.client.get("/v1/admin/devices", headers=bearer(admin_key))).is_success


async def test_a_reader_key_never_uploads_nor_opens_the_admin_api(
    settings: Settings, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    """Issued reader keys live in the same table; the gateway does not even load them."""
    _, reader_key = await registry_store.issue_key(
        db, "reader", fleet["gw_a"], expires_at=None, actor=CLI, all_patients=True
    )
    async with running(secured(settings)) as gw:
        digests = gw.app.state.registry.current().credentials
        assert digests and all(c.kind != "reader" for c in digests.values())
        content = body(fleet["device"], fleet["patient"])
        assert_problem(await gw.post(reader_key, content), 401, "invalid_credential")
        listing = await gw.client.get("/v1/admin/devices", headers=bearer(reader_key))
        assert_problem(listing, 401, "invalid_credential")
        assert (await gw.post(fleet["key_a"], content)).status_code == 202
    assert len(await produced(settings)) == 1  # only the gateway key's upload


async def test_the_simulator_registers_its_fleet_through_the_admin_api_then_uploads(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """What `make run` and compose's sim profile do against an enforcing gateway."""
    gateway_id = uid("gw-sim")
    gateway_key = await issue(db, gateway_id)
    _, admin_key = await registry_store.issue_key(db, "admin", "sim", expires_at=None, actor=CLI)
    seed = int(uuid.uuid4().int % 1_000_000)  # this run's own device and patient ids
    patients = [simulate.Patient(i, seed) for i in range(1_000_000 + seed, 1_000_002 + seed)]
    since = contract.now_ms() - 600_000
    async with running(secured(settings)) as gw:
        url = f"http://127.0.0.1:{gw.port}"
        with pytest.raises(ConfigError, match="401"):
            await simulate.register_fleet(url, gateway_key, gateway_id, patients, since)
        await simulate.register_fleet(url, admin_key, gateway_id, patients, since)
        # Again, as a restarted simulator does: already registered is fine.
        await simulate.register_fleet(url, admin_key, gateway_id, patients, since)
        for patient in patients:
            readings = patient.readings(since, since + 60_000, 5_000, [])
            content = orjson.dumps(
                {
                    "device_id": patient.device_id,
                    "patient_id": patient.patient_id,
                    "readings": readings,
                }
            )
            answer = await gw.post(gateway_key, content)
            assert answer.status_code == 202, answer.text
            assert answer.json()["rejected"] == []  # the backlog is within the binding
    rows = await db.fetch(
        "SELECT device_id FROM device_gateways WHERE gateway_id = $1 ORDER BY 1", gateway_id
    )
    assert [r["device_id"] for r in rows] == sorted(p.device_id for p in patients)
    missing = tmp_path / "no-such-key"
    with pytest.raises(ConfigError, match="admin key file"):
        simulate._read_key(str(missing))  # noqa: SLF001


def test_the_cli_issues_lists_and_revokes_keys(settings: Settings) -> None:
    gw = uid("gw-cli")

    def vitals(*args: str, code: int = 0) -> str:
        done = cli.vitals(*args, database_url=settings.database_url, code=code)
        return done.stdout if code == 0 else done.stderr

    issued = vitals("gateways", "issue", gw)
    key_id = issued.split("key_id: ")[1].split()[0]
    key = issued.split("key:    ")[1].split()[0]
    listed = vitals("gateways", "list")
    assert key_id in listed and key not in listed
    vitals("gateways", "revoke", key_id)
    rows = [orjson.loads(line) for line in vitals("gateways", "list").splitlines()]
    (mine,) = [r for r in rows if r["key_id"] == key_id]
    assert mine["principal"] == gw and mine["revoked_at"] is not None
    for refused, why in (
        (("gateways", "issue", ""), "at most 128 characters"),
        (("devices", "register", "d\u202e1", "--patient", "p", "--gateway", gw), "invisible"),
        (("devices", "move", uid("dev"), "--patient", "p"), "not registered"),
    ):
        assert why in vitals(*refused, code=1)
    assert "no live key" in vitals("gateways", "revoke", key_id, code=1)


# --- device registry and binding -------------------------------------------------------


async def test_an_upload_for_someone_elses_device_is_403_whole_and_produces_nothing(
    gateway: Gateway, settings: Settings, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    good = body(fleet["device"], fleet["patient"])
    cases = [
        (fleet["key_b"], good, "gateway_not_bound"),
        (fleet["key_a"], body(uid("dev"), fleet["patient"]), "device_not_registered"),
        (fleet["key_a"], body(fleet["device"], uid("p")), "patient_not_bound"),
    ]
    for key, content, code in cases:
        doc = assert_problem(await gateway.post(key, content), 403, code)
        assert fleet["patient"] not in str(doc) and fleet["device"] not in str(doc)
    assert await produced(settings) == []


async def test_a_moved_device_keeps_old_readings_with_the_old_patient(
    gateway: Gateway, settings: Settings, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    device, old, new = fleet["device"], fleet["patient"], uid("p")
    moved_at = T0 + timedelta(hours=1)
    await registry_store.move_device(db, device, new, since=moved_at, actor=CLI)
    await gateway.reload()
    before, after = moved_at - timedelta(minutes=1), moved_at + timedelta(minutes=1)

    # The old patient's backlog, uploaded after the move: taken for the time it was theirs.
    backlog = await gateway.post(fleet["key_a"], body(device, old, before, after))
    assert backlog.status_code == 202, backlog.text
    assert [(r["index"], r["code"]) for r in backlog.json()["rejected"]] == [(1, "outside_binding")]
    assert (await gateway.post(fleet["key_a"], body(device, new, after))).status_code == 202
    assert_problem(
        await gateway.post(fleet["key_a"], body(device, new, before)), 422, "nothing_valid"
    )
    records = [contract.decode_upload(r.value) for r in await produced(settings)]
    got = sorted((u.patient_id, [r.t for r in u.readings]) for u in records)
    assert got == sorted(
        [(old, [int(before.timestamp() * 1000)]), (new, [int(after.timestamp() * 1000)])]
    )


async def test_the_admin_api_registers_binds_moves_and_audits(
    gateway: Gateway, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    _, admin_key = await registry_store.issue_key(
        db, "admin", "nurse-ops", expires_at=None, actor=CLI
    )
    await gateway.reload()
    admin = bearer(admin_key)
    device, patient = uid("dev"), uid("p")
    created = await gateway.client.post(
        "/v1/admin/devices",
        json={
            "device_id": device,
            "patient_id": patient,
            "gateways": [fleet["gw_b"]],
            "since": (T0 - timedelta(days=1)).isoformat(),
        },
        headers=admin,
    )
    assert created.status_code == 204, created.text
    # Registered on this replica at once: gateway B may upload for it, A may not.
    assert (await gateway.post(fleet["key_b"], body(device, patient))).status_code == 202
    assert_problem(
        await gateway.post(fleet["key_a"], body(device, patient)), 403, "gateway_not_bound"
    )
    bound = await gateway.client.put(
        f"/v1/admin/devices/{device}/gateways/{fleet['gw_a']}", headers=admin
    )
    assert bound.status_code == 204
    assert (await gateway.post(fleet["key_a"], body(device, patient))).status_code == 202

    again = await gateway.client.post(
        "/v1/admin/devices",
        json={"device_id": device, "patient_id": patient, "gateways": [fleet["gw_b"]]},
        headers=admin,
    )
    assert_problem(again, 409, "device_exists")
    missing = await gateway.client.post(
        f"/v1/admin/devices/{uid('dev')}/moves", json={"patient_id": patient}, headers=admin
    )
    assert_problem(missing, 404, "no_such_device")
    early = await gateway.client.post(
        f"/v1/admin/devices/{device}/moves",
        json={"patient_id": uid("p"), "since": (T0 - timedelta(days=2)).isoformat()},
        headers=admin,
    )
    assert_problem(early, 409, "move_before_binding")
    hidden = await gateway.client.post(
        "/v1/admin/devices",
        json={"device_id": "dev\u202egnp.exe", "patient_id": patient, "gateways": ["g"]},
        headers=admin,
    )
    assert_problem(hidden, 400, "invalid_request")

    listing = (await gateway.client.get("/v1/admin/devices", headers=admin)).json()["devices"]
    (row,) = [d for d in listing if d["device_id"] == device]
    assert row == {
        "device_id": device,
        "patient_id": patient,
        "gateways": sorted([fleet["gw_a"], fleet["gw_b"]]),
    }
    actions = await db.fetch(
        "SELECT action, actor_kind, actor FROM audit_log"
        " WHERE detail->>'device_id' = $1 ORDER BY id",
        device,
    )
    assert [tuple(a) for a in actions] == [
        ("device_registered", "admin", "nurse-ops"),
        ("gateway_bound", "admin", "nurse-ops"),
    ]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE detail::text LIKE $1", f"%{patient}%"
        )
        == 0
    )


async def test_the_admin_api_adds_teams_assigns_patients_and_audits(
    gateway: Gateway, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    _, admin_key = await registry_store.issue_key(
        db, "admin", "ward-ops", expires_at=None, actor=CLI
    )
    await gateway.reload()
    admin = bearer(admin_key)
    team, patient = uid("ward"), uid("p")
    created = await gateway.client.post("/v1/admin/teams", json={"team_id": team}, headers=admin)
    assert created.status_code == 204, created.text
    again = await gateway.client.post("/v1/admin/teams", json={"team_id": team}, headers=admin)
    assert_problem(again, 409, "team_exists")
    hidden = await gateway.client.post(
        "/v1/admin/teams", json={"team_id": "ward\u202e3"}, headers=admin
    )
    assert_problem(hidden, 400, "invalid_request")
    member = f"/v1/admin/teams/{team}/patients/{patient}"
    assert (await gateway.client.put(member, headers=admin)).status_code == 204
    assert (await gateway.client.put(member, headers=admin)).status_code == 204  # idempotent
    nowhere = await gateway.client.put(f"/v1/admin/teams/{uid('x')}/patients/p", headers=admin)
    assert_problem(nowhere, 404, "no_such_team")
    listing = (await gateway.client.get("/v1/admin/teams", headers=admin)).json()["teams"]
    assert [t["patients"] for t in listing if t["team_id"] == team] == [[patient]]
    assert (await gateway.client.delete(member, headers=admin)).status_code == 204
    listing = (await gateway.client.get("/v1/admin/teams", headers=admin)).json()["teams"]
    assert [t["patients"] for t in listing if t["team_id"] == team] == [[]]
    # A gateway key never manages teams.
    refused = await gateway.client.post(
        "/v1/admin/teams", json={"team_id": uid("ward")}, headers=bearer(fleet["key_a"])
    )
    assert refused.status_code == 401
    actions = await db.fetch(
        "SELECT action, actor_kind, actor, detail->>'patients' AS n FROM audit_log"
        " WHERE detail->>'team_id' = $1 ORDER BY id",
        team,
    )
    assert [tuple(a) for a in actions] == [
        ("team_added", "admin", "ward-ops", None),
        ("patients_assigned", "admin", "ward-ops", "1"),
        ("patients_assigned", "admin", "ward-ops", "0"),
        ("patients_unassigned", "admin", "ward-ops", "1"),
    ]
    text = await db.fetchval("SELECT string_agg(detail::text, ' ') FROM audit_log")
    assert patient not in text


# --- limits ---------------------------------------------------------------------------


async def test_a_gateway_over_its_rate_is_429_with_retry_after_and_others_are_not(
    settings: Settings, fleet: dict[str, str], db: asyncpg.Connection
) -> None:
    await registry_store.bind_gateway(db, fleet["device"], fleet["gw_b"], actor=CLI)
    async with running(secured(settings, rate_limit_per_s=0.5, rate_limit_burst=2)) as gw:
        content = body(fleet["device"], fleet["patient"])
        answers = [await gw.post(fleet["key_a"], content) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert_problem(answers[2], 429, "rate_limited")
        assert 1 <= int(answers[2].headers["retry-after"]) <= 2
        assert (await gw.post(fleet["key_b"], content)).status_code == 202
    assert len(await produced(settings)) == 3


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    """A byte every `every_s` seconds (slowloris), until done or the server has closed."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)
    except ConnectionError:
        pass


async def _cut_off(port: int, head: bytes, trickled: bytes, every_s: float = 0.1) -> bytes:
    """Send `head` at once and `trickled` a byte at a time; everything the server said up
    to its close. Fails if the server waited for the whole trickle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    sending = asyncio.create_task(_trickle(writer, trickled, every_s))
    try:
        answer = await asyncio.wait_for(reader.read(), 10)  # to the server's close
        assert not sending.done(), "the server waited for the slow client to finish"
        return answer
    finally:
        sending.cancel()
        writer.close()


def _problem_of(answer: bytes) -> dict[str, Any]:
    head, _, content = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return orjson.loads(content)


async def test_a_slow_body_is_cut_off_with_408_and_produces_nothing(
    settings: Settings, fleet: dict[str, str]
) -> None:
    async with running(secured(settings, body_timeout_s=0.5)) as gw:
        content = body(fleet["device"], fleet["patient"])
        head = (
            f"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {fleet['key_a']}\r\nContent-Length: {len(content)}\r\n\r\n"
        )
        # 50 bytes at 0.1 s each: far slower than the deadline allows.
        answer = await _cut_off(gw.port, head.encode(), content[:50])
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert _problem_of(answer)["code"] == "body_timeout"
        await gw.client.get("/healthz")  # the upload's refusal is counted by now
        metrics = (await gw.client.get("/metrics")).text
        assert metric_value(metrics, "vitals_gateway_uploads_total", outcome="body_timeout") >= 1
    assert await produced(settings) == []


async def test_a_slow_body_is_bounded_on_every_route(
    settings: Settings, fleet: dict[str, str]
) -> None:
    """Not only uploads: the admin API's body, read by FastAPI, has the same deadline."""
    async with running(secured(settings, body_timeout_s=0.5)) as gw:
        head = b"POST /v1/admin/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        answer = await _cut_off(gw.port, head + b"Content-Length: 200\r\n\r\n", b"{" * 50)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert _problem_of(answer)["code"] == "body_timeout"


async def test_a_slow_request_head_is_cut_off_with_408(
    settings: Settings, fleet: dict[str, str]
) -> None:
    async with running(secured(settings, header_timeout_s=0.5)) as gw:
        # slowloris: a request line and headers a byte at a time, never the blank line
        head = f"POST /v1/readings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fleet['key_a']}"
        answer = await _cut_off(gw.port, b"", head.encode())
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        doc = _problem_of(answer)
        assert (doc["status"], doc["code"]) == (408, "header_timeout")
        # A connection that never sends a byte is closed too, without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        metrics = (await gw.client.get("/metrics")).text
        assert metric_value(metrics, "vitals_http_refusals_total", code="header_timeout") >= 1
    assert await produced(settings) == []


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    """One request on an open connection; the answer's status line."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def test_the_head_deadline_leaves_keep_alive_clients_alone(
    settings: Settings, fleet: dict[str, str]
) -> None:
    """The head deadline runs from a request's first byte: a keep-alive connection idle for
    longer than it (within the keep-alive timeout) still takes the next upload."""
    async with running(secured(settings, header_timeout_s=0.5, keep_alive_timeout_s=5)) as gw:
        content = body(fleet["device"], fleet["patient"])
        request = (
            f"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {fleet['key_a']}\r\nContent-Length: {len(content)}\r\n\r\n"
        ).encode() + content
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            assert await _exchange(reader, writer, request) == b"HTTP/1.1 202 Accepted"
            await asyncio.sleep(1.0)  # twice the head deadline
            assert await _exchange(reader, writer, request) == b"HTTP/1.1 202 Accepted"
        finally:
            writer.close()
    assert len(await produced(settings)) == 2


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Flood": "a" * 20_000}, id="one-large-header"),
        pytest.param({f"X-H{i}": "a" for i in range(100)}, id="many-headers"),
        pytest.param({"X-Flood": "a" * 200_000}, id="one-huge-header"),
        pytest.param({f"X-H{i}": "a" * 100 for i in range(5_000)}, id="header-flood"),
        pytest.param({"X-Flood": "a" * 10_000_000}, id="endless-header"),
    ],
)
async def test_a_header_flood_is_refused_before_the_route(
    gateway: Gateway, settings: Settings, fleet: dict[str, str], headers: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {fleet['key_a']}", **headers}
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /v1/readings HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    try:
        await writer.drain()
    except ConnectionError:
        pass  # refused and closed before it all went out; the answer came first
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert _problem_of(answer)["code"] == "headers_too_large"
    assert await produced(settings) == []


async def test_a_request_that_is_not_http_is_a_400_problem(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"POST /v1/readings HTTP/1.1\r\nHost x\r\n\r\n")  # no colon
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert _problem_of(answer)["code"] == "malformed_http"


# --- hostile bodies and identifiers -------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"device_id":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        pytest.param(_nested(5_000), 400, "malformed_json", id="deep-nesting"),
        pytest.param(
            b'{"device_id":"d","patient_id":"p","readings":[{"metric":"heart_rate",'
            b'"t":"2026-01-01T10:00:00Z","v":1e999999,"unit":"/min"}]}',
            400,
            "malformed_json",
            id="huge-float",
        ),
        pytest.param(
            b'{"device_id":"d","patient_id":"p","readings":[{"metric":"heart_rate",'
            b'"t":"2026-01-01T10:00:00Z","v":' + b"9" * 5000 + b',"unit":"/min"}]}',
            400,
            "malformed_json",
            id="huge-integer",
        ),
        pytest.param(
            orjson.dumps({"device_id": "dev\u202e1", "patient_id": "p", "readings": []}),
            400,
            "bad_envelope",
            id="bidi-override-id",
        ),
        pytest.param(
            orjson.dumps({"device_id": "dev\u200b1", "patient_id": "p", "readings": []}),
            400,
            "bad_envelope",
            id="zero-width-id",
        ),
        pytest.param(
            orjson.dumps({"device_id": "d\x00", "patient_id": "p", "readings": []}),
            400,
            "bad_envelope",
            id="nul-in-id",
        ),
        pytest.param(
            orjson.dumps({"device_id": "e\u0301", "patient_id": "p", "readings": []}),
            400,
            "bad_envelope",
            id="non-nfc-id",
        ),
    ],
)
async def test_hostile_json_and_tricky_identifiers_are_refused(
    gateway: Gateway,
    settings: Settings,
    fleet: dict[str, str],
    content: bytes,
    status: int,
    code: str,
) -> None:
    assert_problem(await gateway.post(fleet["key_a"], content), status, code)
    assert await produced(settings) == []


async def test_a_sql_looking_identifier_is_only_ever_data(
    gateway: Gateway, settings: Settings, db: asyncpg.Connection, fleet: dict[str, str]
) -> None:
    device = "x'); DROP TABLE readings; --" + uuid.uuid4().hex[:6]
    await registry_store.register_device(
        db, device, fleet["patient"], [fleet["gw_a"]], since=T0 - timedelta(days=1), actor=CLI
    )
    await gateway.reload()
    assert (await gateway.post(fleet["key_a"], body(device, fleet["patient"]))).status_code == 202
    assert await db.fetchval("SELECT device_id FROM devices WHERE device_id = $1", device) == device
    assert await db.fetchval("SELECT to_regclass('readings') IS NOT NULL")


# --- privacy and audit ------------------------------------------------------------------


async def test_audit_records_wait_out_a_database_outage_then_are_written(
    database_url: str, db: asyncpg.Connection
) -> None:
    gateway_id = uid("gw-audit")
    down = await asyncpg.create_pool(
        database_url.rsplit("/", 1)[0] + "/absent", min_size=0, max_size=1
    )
    trail = AuditTrail(down, queue_max=3, batch_max=2, flush_s=60)
    dropped_before = sample("vitals_gateway_audit_records_total", fate="dropped")
    for n in range(4):  # the fourth does not fit the queue
        trail.upload(gateway_id, outcome="accepted", status=202, upload_id=str(n), accepted=1)
    assert await trail.flush() == 0 and len(trail) == 3  # kept for the next flush
    await down.close()
    assert sample("vitals_gateway_audit_records_total", fate="dropped") == dropped_before + 1

    up = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    try:
        trail._pool = up  # noqa: SLF001 - the database is back, the same trail goes on
        assert await trail.flush() == 3 and len(trail) == 0
    finally:
        await up.close()
    ids = await db.fetch("SELECT upload_id FROM audit_log WHERE actor = $1 ORDER BY id", gateway_id)
    assert [r["upload_id"] for r in ids] == ["0", "1", "2"]


async def test_every_upload_is_audited_with_counts_and_no_identity_or_value(
    gateway: Gateway,
    db: asyncpg.Connection,
    fleet: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    value = 123.25
    ok = await gateway.post(fleet["key_a"], body(fleet["device"], fleet["patient"], v=value))
    refused = await gateway.post(fleet["key_b"], body(fleet["device"], fleet["patient"], v=value))
    assert (ok.status_code, refused.status_code) == (202, 403)

    async def audited() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE actor = ANY($1::text[])",
            [fleet["gw_a"], fleet["gw_b"]],
        )
        return n == 2

    await eventually(audited, 5)
    rows = await db.fetch(
        "SELECT actor, action, outcome, status, upload_id, accepted, rejected, detail::text"
        " FROM audit_log WHERE actor = ANY($1::text[]) ORDER BY id",
        [fleet["gw_a"], fleet["gw_b"]],
    )
    assert [tuple(r)[:7] for r in rows] == [
        (fleet["gw_a"], "upload", "accepted", 202, ok.json()["upload_id"], 1, 0),
        (
            fleet["gw_b"],
            "upload",
            "gateway_not_bound",
            403,
            refused.json()["upload_id"],
            None,
            None,
        ),
    ]
    # Neither the audit trail, the logs nor the metrics name the patient, device or value.
    metrics = (await gateway.client.get("/metrics")).text
    logs = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for text in (repr([tuple(r) for r in rows]), logs, metrics):
        for secret in (fleet["patient"], fleet["device"], str(value)):
            assert secret not in text
    assert metric_value(metrics, "vitals_gateway_uploads_total", outcome="gateway_not_bound") >= 1


async def test_readiness_and_enforced_uploads_wait_for_the_first_registry_load(
    settings: Settings,
) -> None:
    broken = secured(
        settings,
        database_url=settings.database_url.rsplit("/", 1)[0] + "/absent",
        gateway_credentials="gw-env:env-token-123",
    )
    async with serving(build_server(broken, create_app(broken))) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await asyncio.sleep(0.5)
            doc = assert_problem(await client.get("/readyz"), 503, "not_ready")
            assert "registry" in doc["detail"]
            refused = await client.post(
                "/v1/readings", content=body("d", "p"), headers=bearer("env-token-123")
            )
            assert_problem(refused, 503, "registry_unavailable")
            assert refused.json()["title"] == "Device registry unavailable"  # not Kafka
            assert refused.headers["retry-after"]

"""The console's live stream over real HTTP, fed by the real broker: tickets, the care-team
scope, revocation and a slow client (readapi/live.py, readapi/live_routes.py)."""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from frontdoor import registry_store
from readapi import params
from readapi.live_routes import TICKET_SCOPE
from readapi.server import build_server
from sinks.alerts import store
from tests.support.browser import DRIVER, SHOTS, driver_problem
from tests.support.cli import CLI
from tests.support.ids import patient, uid
from tests.support.polling import until
from tests.support.readapi import bearer, quick, row, running, store_open, store_rows
from vitals import contract
from vitals.settings import LOCAL_READER_TOKEN, Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration

CURSOR_KEY = "k" * 32


def live(settings: Settings, **update: Any) -> Settings:
    """The test's broker, topics and database; a read API that reloads keys quickly."""
    fast = {
        "api_port": 0, "registry_refresh_s": 0.2, "audit_flush_s": 0.05,
        "api_rate_limit_per_s": 0, "api_rows_per_minute": 0, "api_cursor_key": CURSOR_KEY,
    }  # fmt: skip
    return Settings(**{**settings.model_dump(), **fast, **update})


def alert_doc(p: str, *, state: str = "opened", detail: str = "") -> bytes:
    now = contract.now_ms()
    detection = contract.Detection(
        alert_id=contract.alert_id(p, "spo2_low", now), patient_id=p, rule="spo2_low",
        state=state, severity="high", episode_start=now, at=now, detected=now,
        retrospective=False, metric="spo2", value=86.0, device_id="w1", detail=detail,
    )  # fmt: skip
    return orjson.dumps(contract.alert_document(detection, now))


def news2_score(p: str) -> bytes:
    return contract.encode_news2_score(contract.News2Score(
        patient_id=p, t=5000, news2=7, band="high", red=True, partial=True, scale=1,
        parameters={"spo2": contract.ScoredParameter(3, 86.0, 0)}, computed=5001,
    ))  # fmt: skip


@asynccontextmanager
async def producing(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def publish(producer: AIOKafkaProducer, settings: Settings, p: str, **kw: Any) -> None:
    topic = settings.topic(contract.ALERTS)
    await producer.send_and_wait(topic, alert_doc(p, **kw), key=p.encode())


async def team_key(conn: asyncpg.Connection, patients: list[str]) -> tuple[str, str]:
    team = uid("ward")
    await registry_store.add_team(conn, team, actor=CLI)
    await registry_store.assign_patients(conn, team, patients, assign=True, actor=CLI)
    return await registry_store.issue_key(
        conn, "reader", "nurse-live", expires_at=None, actor=CLI, teams=[team]
    )


async def feed_reading(client: httpx.AsyncClient, key: str) -> None:
    async def ready() -> bool:
        answer = await client.get("/readyz")
        if answer.status_code != 200 or answer.json()["live_feed"] != "reading":
            return False
        return (await client.post("/v1/console/ticket", headers=bearer(key))).status_code == 201

    await until(ready, "the live feed reading and the key loaded", 20)


async def ticket(client: httpx.AsyncClient, key: str) -> str:
    answer = await client.post("/v1/console/ticket", headers=bearer(key))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["ticket"])


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a text/event-stream; comment lines (heartbeats) as ("", {})."""
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "", {}
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind, orjson.loads(line[len("data: ") :])


async def until_closed(
    client: httpx.AsyncClient, key: str, on_snapshot: Callable[[], Awaitable[object]]
) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a new stream of `key` until the server ends it; `on_snapshot` runs
    once the first snapshot is in."""
    url = f"/v1/console/events?ticket={await ticket(client, key)}"
    seen: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", url) as answer, asyncio.timeout(20):
        async for kind, data in sse(answer):
            seen.append((kind, data))
            if len(seen) == 1:
                await on_snapshot()
    return seen


async def test_a_stream_starts_with_the_board_then_sends_only_its_teams_changes(
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    mine, stranger = patient(), patient()
    _, key = await team_key(db, [mine])
    async with running(live(settings, api_live_heartbeat_s=0.3)) as client:
        await feed_reading(client, key)
        url = f"/v1/console/events?ticket={await ticket(client, key)}"
        async with producing(settings) as producer, client.stream("GET", url) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert answer.headers["cache-control"] == "no-store"
            seen: list[tuple[str, dict[str, Any]]] = []
            async with asyncio.timeout(20):
                async for kind, data in sse(answer):
                    seen.append((kind, data))
                    if kind == "snapshot":
                        await publish(producer, settings, stranger)
                        await publish(producer, settings, mine)
                        await producer.send_and_wait(
                            settings.topic(contract.NEWS2_SCORES), news2_score(mine),
                            key=mine.encode(),
                        )  # fmt: skip
                    # After the alert, heartbeats keep coming while nothing changes.
                    kinds = [k for k, _ in seen]
                    if {"alert", "news2"} <= set(kinds) and kinds[-2:] == ["", ""]:
                        break
        metrics = (await client.get("/metrics")).text
    assert seen[0][0] == "snapshot" and seen[0][1]["live"] is True
    assert [p["patient_id"] for p in seen[0][1]["patients"]] == [mine]
    alerts = [data for kind, data in seen if kind == "alert"]
    assert [a["patient_id"] for a in alerts] == [mine]
    assert alerts[0]["state"] == "opened" and alerts[0]["schema"] == contract.ALERT_SCHEMA
    scores = [data for kind, data in seen if kind == "news2"]
    assert scores == [
        {"patient_id": mine, "t": contract.iso(5000), "score": 7, "band": "high", "partial": True}
    ]
    assert "vitals_api_live_feed_up 1.0" in metrics


async def test_tickets_missing_forged_expired_or_of_a_revoked_key_open_nothing(
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    key_id, key = await team_key(db, [patient()])
    async with running(live(settings, api_live_ticket_s=0.3)) as client:
        await until(
            lambda: _status(client.post("/v1/console/ticket", headers=bearer(key)), 201),
            "the key loaded",
            10,
        )
        keyless = await client.post("/v1/console/ticket")
        missing = await client.get("/v1/console/events")
        forged = await client.get("/v1/console/events", params={"ticket": "abc.def"})
        # Signed by this API, but a paging cursor, not a ticket.
        later = datetime.now(UTC) + timedelta(minutes=1)
        cursor = params.encode_cursor(
            params.Cursor("alerts:p-1:any", later, (key_id,)), CURSOR_KEY.encode()
        )
        not_a_ticket = await client.get("/v1/console/events", params={"ticket": cursor})
        stale = await ticket(client, key)
        await asyncio.sleep(0.5)
        expired = await client.get("/v1/console/events", params={"ticket": stale})
        fresh = await ticket(client, key)
        await registry_store.revoke_key(db, key_id, actor=CLI)
        await asyncio.sleep(1.0)  # a few registry reloads
        revoked = await client.get("/v1/console/events", params={"ticket": fresh})
        extra = await client.get(
            "/v1/console/events", params={"ticket": fresh, "key": key}, headers=bearer(key)
        )
    assert keyless.status_code == 401 and keyless.json()["code"] == "missing_credential"
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_ticket")
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_ticket")
    assert (not_a_ticket.status_code, not_a_ticket.json()["code"]) == (401, "invalid_ticket")
    assert (expired.status_code, expired.json()["code"]) == (401, "expired_ticket")
    assert (revoked.status_code, revoked.json()["code"]) == (401, "revoked_credential")
    assert (extra.status_code, extra.json()["code"]) == (400, "unknown_parameter")
    assert TICKET_SCOPE not in forged.text


async def _status(request: Any, status: int) -> bool:
    return bool((await request).status_code == status)


async def test_a_revoked_key_loses_its_open_stream(
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    key_id, key = await team_key(db, [patient()])
    async with running(live(settings)) as client:
        await feed_reading(client, key)
        kinds = await until_closed(
            client, key, lambda: registry_store.revoke_key(db, key_id, actor=CLI)
        )
    assert kinds[0][0] == "snapshot"
    assert kinds[-1] == ("closed", {"reason": "revoked_credential"})


async def test_a_client_that_does_not_read_is_dropped_and_the_feed_goes_on(
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    mine = patient()
    _, key = await team_key(db, [mine])
    async with running(live(settings, api_live_queue_max=4)) as client:
        await feed_reading(client, key)
        port = int(str(client.base_url).rsplit(":", 1)[1])
        # A raw client with a small receive window that sends its request and never reads.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        path = f"/v1/console/events?ticket={await ticket(client, key)}"
        slow.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await until(lambda: _streams(client, 1), "the slow stream open", 10)
        async with producing(settings) as producer:
            big = "x" * 4000
            # Far more than the socket buffers and the queue of 4 can hold.
            sends = [
                await producer.send(settings.topic(contract.ALERTS), alert_doc(mine, detail=big),
                                    key=mine.encode())
                for _ in range(3000)
            ]  # fmt: skip
            await asyncio.gather(*sends)
            await until(lambda: _streams(client, 0), "the slow stream dropped", 30)
            # The feed still serves a new stream.
            url = f"/v1/console/events?ticket={await ticket(client, key)}"
            async with client.stream("GET", url) as answer, asyncio.timeout(20):
                async for kind, data in sse(answer):
                    if kind == "snapshot":
                        await publish(producer, settings, mine, detail="after the drop")
                    if kind == "alert" and data["detail"] == "after the drop":
                        break
        metrics = (await client.get("/metrics")).text
        received = await asyncio.to_thread(read_all, slow)
    assert b'event: closed\ndata: {"reason":"slow_client"}' in received
    assert 'vitals_api_live_streams_closed_total{reason="slow_client"}' in metrics


async def _streams(client: httpx.AsyncClient, n: int) -> bool:
    metrics = (await client.get("/metrics")).text
    return f"vitals_api_live_streams {float(n)}" in metrics


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"slow_client" in b"".join(chunks[-2:]):
                break
    finally:
        sock.close()
    return b"".join(chunks)


async def test_without_a_broker_the_stream_says_so_and_a_reader_over_its_rows_is_closed(
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    mine = patient()
    _, key = await team_key(db, [mine])
    await store_rows(database_url, [row(mine, "heart_rate", datetime.now(UTC), 70.0)])
    nobody = f"127.0.0.1:{localinfra.free_port()}"  # no broker listens there
    # A budget of one row a minute: the first snapshot (2 rows) overdraws it, the next is
    # refused and ends the stream.
    quiet = quick(database_url, kafka_bootstrap=nobody, api_rate_limit_per_s=0,
                  api_rows_per_minute=1, api_live_snapshot_s=0.3)  # fmt: skip
    failed = 'vitals_background_task_failures_total{task="live-feed"}'
    # The counter is the process's: earlier tests' read APIs may have counted already.
    before = REGISTRY.get_sample_value(
        "vitals_background_task_failures_total", {"task": "live-feed"}
    )
    async with running(quiet) as client:
        await until(
            lambda: _metric_above(client, failed, before or 0.0),
            "the live feed failing (supervised)",
            20,
        )
        ready = await client.get("/readyz")
        await until(lambda: _status(client.post("/v1/console/ticket", headers=bearer(key)), 201),
                    "the key loaded", 10)  # fmt: skip
        seen = await until_closed(client, key, lambda: asyncio.sleep(0))
    assert (ready.status_code, ready.json()["live_feed"]) == (200, "not_reading")
    assert seen[0][0] == "snapshot" and seen[0][1]["live"] is False
    assert seen[-1] == ("closed", {"reason": "row_limit"})


async def _metric_above(client: httpx.AsyncClient, name: str, floor: float) -> bool:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1]) > floor
    return False


async def test_changes_that_cannot_be_recorded_are_not_sent(
    settings: Settings,
    fresh_url: str,
) -> None:
    conn = await asyncpg.connect(fresh_url)
    try:
        await conn.execute("DROP TABLE read_audit")  # the audit's writes fail, its queue fills
    finally:
        await conn.close()
    somebody = patient()
    # The built-in all-patients reader: no registry needed in this database.
    api = live(settings, database_url=fresh_url, audit_queue_max=3)
    async with running(api) as client, producing(settings) as producer:
        await feed_reading(client, LOCAL_READER_TOKEN)

        async def six_alerts() -> None:
            for _ in range(6):
                await publish(producer, settings, somebody)

        seen = await until_closed(client, LOCAL_READER_TOKEN, six_alerts)
    sent = [data for kind, data in seen if kind == "alert"]
    assert 0 < len(sent) <= 3  # each one a record in the queue; none sent off the record
    assert seen[-1] == ("closed", {"reason": "audit_unavailable"})


# --- in a real browser ------------------------------------------------------------------

BOARD_PATIENTS = 499  # and the newcomer: the board's 500 (board.BOARD_MAX)
STORED_OPEN = 50  # open alerts on the board when the page opens
LIVE_ALERTS = 50  # published while it is open: the figures' samples


async def stored_and_published(
    conn: asyncpg.Connection, producer: AIOKafkaProducer, settings: Settings, p: str
) -> tuple[str, int]:
    """As the alerts sink does it: the alert stored, then published on vitals.alerts.
    (alert id, publication time in ms)."""
    now = contract.now_ms()
    detection = contract.Detection(
        alert_id=contract.alert_id(p, "spo2_low", now), patient_id=p, rule="spo2_low",
        state="opened", severity="high", episode_start=now, at=now, detected=now,
        retrospective=False, metric="spo2", value=86.0, device_id="w1",
    )  # fmt: skip
    rows = [store.row_of(detection)]
    await store.store(conn, rows)
    await store.mark_published(conn, store.keys_of(rows), await conn.fetchval("SELECT now()"))
    published = contract.now_ms()
    document = orjson.dumps(contract.alert_document(detection, published))
    await producer.send_and_wait(settings.topic(contract.ALERTS), document, key=p.encode())
    return detection.alert_id, published


async def test_the_board_follows_the_broker_survives_a_network_cut_and_a_revoked_key_ends_it(
    settings: Settings,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    if problem := driver_problem():
        pytest.fail(problem)
    ward = [patient() for _ in range(BOARD_PATIENTS)]
    newcomer = patient()
    key_id, key = await team_key(db, ward)
    team = await db.fetchval("SELECT team_id FROM reader_key_teams WHERE key_id = $1", key_id)
    now = datetime.now(UTC)
    await store_rows(
        database_url,
        [row(p, m, now - timedelta(seconds=30 + i % 600), v)
         for i, p in enumerate(ward) for m, v in (("heart_rate", 80.0), ("spo2", 95.0))],
    )  # fmt: skip
    stored = [await store_open(db, p) for p in ward[:STORED_OPEN]]
    SHOTS.mkdir(parents=True, exist_ok=True)
    published: dict[str, int] = {}

    async with (
        running(live(settings, registry_refresh_s=0.5)) as client,
        producing(settings) as producer,
    ):
        await feed_reading(client, key)
        driver = await asyncio.create_subprocess_exec(
            "node", str(DRIVER / "live.mjs"), str(client.base_url), key, str(SHOTS),
            cwd=DRIVER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert driver.stdin is not None and driver.stdout is not None
        async with asyncio.timeout(240):
            while line := await driver.stdout.readline():
                said = orjson.loads(line)
                if said.get("step") == "publish":
                    for p in ward[STORED_OPEN : STORED_OPEN + LIVE_ALERTS]:
                        alert, at = await stored_and_published(db, producer, settings, p)
                        published[alert] = at
                        await asyncio.sleep(0.05)
                    # A patient given to the team now: on the board with its first alert.
                    await registry_store.assign_patients(
                        db, team, [newcomer], assign=True, actor=CLI
                    )
                    await asyncio.sleep(2.0)  # the keys reloaded, the stream's scope with them
                    alert, at = await stored_and_published(db, producer, settings, newcomer)
                    published[alert] = at
                    answer = {"alerts": list(published), "newcomer": newcomer}
                elif said.get("step") == "revoke":
                    await registry_store.revoke_key(db, key_id, actor=CLI)
                    answer = {}
                else:
                    seen = said
                    break
                driver.stdin.write(orjson.dumps(answer) + b"\n")
                await driver.stdin.drain()
            driver.stdin.close()
            err = (await driver.stderr.read()).decode() if driver.stderr else ""
            await driver.wait()

    assert driver.returncode == 0 and seen.get("done"), (seen, err[-2000:])
    # The board as the page opened: every patient once, the open alerts' patients first.
    assert len(seen["rows_first"]) == BOARD_PATIENTS == len(set(seen["rows_first"]))
    assert set(seen["rows_first"][:STORED_OPEN]) == set(ward[:STORED_OPEN])
    # Every published alert reached the page without a reload; the newcomer got a row.
    assert seen["same_page"] and set(published) <= set(seen["alert_seen_at"])
    assert len(seen["rows_live"]) == BOARD_PATIENTS + 1 == len(set(seen["rows_live"]))
    assert newcomer in seen["rows_live"]
    # Cut, said, restored: the same board again, no patient or alert twice.
    assert seen["lost_text"] == "Connection lost, reconnecting…"
    assert sorted(seen["rows_after_reconnect"]) == sorted(seen["rows_live"])
    after = seen["alerts_after_reconnect"]
    assert len(after) == len(set(after)) and set(after) == set(stored) | set(published)
    # The revoked key: signed out, no rows, the key gone from the tab.
    assert "revoked" in seen["revoked_error"]
    assert seen["rows_after_revoke"] == 0 and seen["key_after_revoke"] is None
    figures(seen, published)


def figures(seen: dict[str, Any], published: dict[str, int]) -> None:
    """The console's figures (docs/benchmarks.md), measured here, never asserted."""
    latency = sorted(seen["alert_seen_at"][a] - at for a, at in published.items())
    deltas = sorted(seen["delta_render_ms"])
    doc = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1m": round(os.getloadavg()[0], 2),  # the machine is shared
        "cpus": os.cpu_count(),
        "first_contentful_paint_ms": round(seen["first_paint_ms"], 1),
        "board_after_sign_in_ms": seen["board_after_sign_in_ms"],
        "board_patients": BOARD_PATIENTS,
        "open_alerts_at_start": STORED_OPEN,
        "snapshot_render_ms": round(seen["snapshot_render_ms"][0], 1),
        "alerts_published": len(latency),
        "publication_to_row_ms": {"p50": _rank(latency, 0.5), "p99": _rank(latency, 0.99),
                                  "max": round(latency[-1], 1)},
        "delta_render_ms": {"n": len(deltas), "p50": _rank(deltas, 0.5),
                            "p99": _rank(deltas, 0.99)},
    }  # fmt: skip
    out = SHOTS / "figures.json"
    out.write_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"console figures -> {out}: {doc}")


def _rank(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    return round(sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)], 1)


async def test_a_stopping_server_ends_its_streams_first(
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    _, key = await team_key(db, [patient()])
    # A grace longer than the test's wait: the stream must end because it was told to.
    server = build_server(live(settings, shutdown_grace_s=60))
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, "the read API started", 10)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await until(
                lambda: _status(client.post("/v1/console/ticket", headers=bearer(key)), 201),
                "the key loaded",
                10,
            )

            async def stop() -> None:
                server.should_exit = True

            kinds = await until_closed(client, key, stop)
        async with asyncio.timeout(20):
            await serving
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 70)
    assert kinds[0][0] == "snapshot"
    assert kinds[-1] == ("closed", {"reason": "server_stopping"})

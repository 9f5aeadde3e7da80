"""The read API over real HTTP (uvicorn in this process) on a real, migrated PostgreSQL.

Readings go in through the sink's writer (copy_then_upsert), alerts through the alerts
sink's store, so the API reads exactly what the pipeline stores. Every test uses patient
ids of its own: the session's database is shared.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from frontdoor import registry_store
from frontdoor.errors import NotFound
from readapi.params import Cursor, encode_cursor
from tests.support import cli
from tests.support.ids import patient
from tests.support.polling import until
from tests.support.readapi import (
    AUTH,
    CURSOR_KEY,
    T0,
    VITALS,
    D,
    H,
    M,
    S,
    iso,
    row,
    running,
    store_alerts,
    store_rows,
    store_scores_computed_from,
    vitals_upload,
)
from vitals import contract
from vitals.settings import LOCAL_GATEWAY_TOKEN, Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # No limits here (tests page a row at a time): test_read_limits.py tests them.
    settings = Settings(
        database_url=database_url, api_port=0, api_page_max=500, api_cursor_key=CURSOR_KEY,
        api_rate_limit_per_s=0, api_rows_per_minute=0,
    )  # fmt: skip
    async with running(settings) as client:
        yield client


async def get(client: httpx.AsyncClient, path: str, **query: Any) -> httpx.Response:
    return await client.get(path, params=query, headers=AUTH)


async def ok(client: httpx.AsyncClient, path: str, **query: Any) -> dict[str, Any]:
    answer = await get(client, path, **query)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def all_pages(client: httpx.AsyncClient, path: str, **query: Any) -> list[dict[str, Any]]:
    """Follows next_cursor to the end; every page but the last is full."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = await ok(client, path, **query, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == int(query["limit"])
    raise AssertionError("paging did not end")


# --- auth, probes ------------------------------------------------------------------------


async def test_readers_only(api: httpx.AsyncClient) -> None:
    path, query = (
        "/v1/patients/p-1/readings",
        {"metric": "spo2", "from": iso(T0), "to": iso(T0 + H)},
    )
    missing = await api.get(path, params=query)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "missing_credential"
    assert missing.headers["www-authenticate"] == 'Bearer realm="vitals"'
    for token in ("not-a-reader-token", LOCAL_GATEWAY_TOKEN):  # a gateway key never reads
        wrong = await api.get(path, params=query, headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_credential"
    basic = await api.get(path, params=query, headers={"Authorization": "Basic eDp5"})
    assert basic.json()["code"] == "missing_credential"
    for route in ("alerts", "news2"):
        assert (await api.get(f"/v1/patients/p-1/{route}")).status_code == 401
    assert (await get(api, path, **query)).status_code == 200


async def test_probes_and_metrics(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}

    async def ready() -> bool:  # once the reader keys are loaded (at start)
        return (await api.get("/readyz")).status_code == 200

    await until(ready, "the read API ready", 10)
    state = (await api.get("/readyz")).json()
    assert state["ready"] is True and state["live_feed"] in ("reading", "not_reading")
    await api.get("/v1/patients/p-1/alerts")  # a 401, counted by route template
    metrics = (await api.get("/metrics")).text
    assert 'vitals_api_requests_total{route="/v1/patients/{patient_id}/alerts",status="401"}' in (
        metrics
    )


async def test_not_ready_while_the_database_is_unreachable() -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/none", api_port=0)
    async with running(settings) as client:
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["code"] == "not_ready"
        assert "retry-after" in answer.headers
        assert (await client.get("/healthz")).status_code == 200


async def test_not_ready_until_the_reader_keys_have_loaded(pg_server: str) -> None:
    """A database that answers but has no reader_keys view (not migrated): the keys never
    load and /readyz says why, while /healthz stays alive."""
    name = f"vitals_nokeys_{uuid.uuid4().hex[:8]}"
    url = localinfra.create_database(pg_server, name, exist_ok=False)
    try:
        settings = Settings(database_url=url, api_port=0, registry_refresh_s=0.2)
        async with running(settings) as client:
            await asyncio.sleep(0.5)  # a few failed reloads
            answer = await client.get("/readyz")
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "not_ready"
            assert "reader keys" in answer.json()["detail"]
            assert (await client.get("/healthz")).status_code == 200
    finally:
        localinfra.drop_database(pg_server, name)


# --- issued reader keys (`vitals readers issue`; migration 0008) ----------------------------


async def test_issued_reader_keys_read_within_a_refresh_and_stop_when_revoked(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, api_port=0, registry_refresh_s=0.2)
    cli = ("cli", "pytest")
    owner = await asyncpg.connect(database_url)
    try:
        key_id, key = await registry_store.issue_key(
            owner, "reader", "dashboard-1", expires_at=None, actor=cli, all_patients=True
        )
        _, expired = await registry_store.issue_key(
            owner,
            "reader",
            "dashboard-2",
            expires_at=datetime.now(UTC) - S,
            actor=cli,
            all_patients=True,
        )
        # Keys of the other kinds, for the same principal name: never readers.
        _, gateway_key = await registry_store.issue_key(
            owner, "gateway", "dashboard-1", expires_at=None, actor=cli
        )
        _, admin_key = await registry_store.issue_key(
            owner, "admin", "dashboard-1", expires_at=None, actor=cli
        )
        async with running(settings) as client:
            path = "/v1/patients/p-keys/alerts"

            async def status(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                return (await client.get(path, headers=headers)).status_code

            await until(lambda: _is(status(key), 200), "the issued reader key accepted", 10)
            for other in (gateway_key, admin_key):
                answer = await client.get(path, headers={"Authorization": f"Bearer {other}"})
                assert answer.status_code == 401
                assert answer.json()["code"] == "invalid_credential"
            answer = await client.get(path, headers={"Authorization": f"Bearer {expired}"})
            assert answer.json()["code"] == "expired_credential"
            # `readers revoke` takes only reader keys: a gateway key's id is not one.
            with pytest.raises(NotFound):
                await registry_store.revoke_key(
                    owner, gateway_key.split("_")[1], actor=cli, kind="reader"
                )
            await registry_store.revoke_key(owner, key_id, actor=cli, kind="reader")
            await until(lambda: _is(status(key), 401), "the revoked reader key refused", 10)
            answer = await client.get(path, headers={"Authorization": f"Bearer {key}"})
            assert answer.json()["code"] == "revoked_credential"
            assert (await client.get(path, headers=AUTH)).status_code == 200  # env reader
    finally:
        await owner.close()


async def _is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


def test_the_cli_issues_lists_and_revokes_reader_keys(database_url: str, tmp_path: Path) -> None:
    def vitals(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        return cli.vitals(*args, database_url=database_url, code=code)

    issued = vitals("readers", "issue", "dash-cli", "--all-patients").stdout
    key_id = issued.split("key_id: ")[1].split()[0]
    key = issued.split("key:    ")[1].split()[0]
    assert key.startswith(f"vk_{key_id}_")
    listed = [orjson.loads(line) for line in vitals("readers", "list").stdout.splitlines()]
    assert key_id in {r["key_id"] for r in listed} and key not in repr(listed)
    gateway_ids = [
        orjson.loads(line)["key_id"] for line in vitals("gateways", "list").stdout.splitlines()
    ]
    assert key_id not in gateway_ids
    if gateway_ids:  # a gateway key's id is not a reader key's
        refused = vitals("readers", "revoke", gateway_ids[0], code=1)
        assert "no live key" in refused.stderr
    vitals("readers", "revoke", key_id)
    assert "no live key" in vitals("readers", "revoke", key_id, code=1).stderr
    # --key-file: the key goes to a file only its owner can read, never to the output.
    key_file = tmp_path / "reader-key"
    written = vitals(
        "readers", "issue", "dash-file", "--all-patients", "--key-file", str(key_file)
    ).stdout
    stored = key_file.read_text().strip()
    assert stored.startswith("vk_") and stored not in written
    assert key_file.stat().st_mode & 0o777 == 0o600
    # A file that cannot be written: refused before any key is issued.
    before = len(vitals("readers", "list").stdout.splitlines())
    bad = vitals(
        "readers",
        "issue",
        "dash-x",
        "--all-patients",
        "--key-file",
        str(tmp_path / "no" / "k"),
        code=1,
    )
    assert "key file" in bad.stderr
    assert len(vitals("readers", "list").stdout.splitlines()) == before


# --- readings ----------------------------------------------------------------------------


async def test_raw_readings_of_one_series_in_a_half_open_range(
    api: httpx.AsyncClient, database_url: str
) -> None:
    p = patient()
    await store_rows(
        database_url,
        [
            row(p, "spo2", T0 - S, 90.0),  # before from
            row(p, "spo2", T0, 97.0),  # from: included
            row(p, "spo2", T0, 96.0, device="w0"),  # same instant, another device
            row(p, "spo2", T0 + 30 * S, 95.5),
            row(p, "spo2", T0 + M, 94.0),  # to: excluded
            row(p, "heart_rate", T0 + S, 70.0),  # another metric
            row(patient(), "spo2", T0 + S, 88.0),  # another patient
        ],
    )
    page = await ok(
        api, f"/v1/patients/{p}/readings", metric="spo2", **{"from": iso(T0)}, to=iso(T0 + M),
        resolution="raw",
    )  # fmt: skip
    assert page["resolution"] == "raw" and page["next_cursor"] is None
    assert page["items"] == [
        {"t": "2026-03-01T08:00:00+00:00", "value": 96.0, "unit": "%", "device_id": "w0"},
        {"t": "2026-03-01T08:00:00+00:00", "value": 97.0, "unit": "%", "device_id": "w1"},
        {"t": "2026-03-01T08:00:30+00:00", "value": 95.5, "unit": "%", "device_id": "w1"},
    ]
    # Offsets other than Z mean the same instant.
    same = await ok(
        api, f"/v1/patients/{p}/readings", metric="spo2", **{"from": "2026-03-01T16:00:00+08:00"},
        to="2026-03-01T16:01:00+08:00", resolution="raw",
    )  # fmt: skip
    assert same["items"] == page["items"]


async def test_buckets_per_minute_and_per_hour(api: httpx.AsyncClient, database_url: str) -> None:
    p = patient()
    await store_rows(
        database_url,
        [row(p, "heart_rate", T0, 60.0), row(p, "heart_rate", T0 + 20 * S, 70.0),
         row(p, "heart_rate", T0 + 30 * S, 100.0, device="w2"),
         row(p, "heart_rate", T0 + M, 90.0), row(p, "heart_rate", T0 + H, 40.0)],
    )  # fmt: skip
    path, window = f"/v1/patients/{p}/readings", {"from": iso(T0), "to": iso(T0 + 2 * H)}
    minutes = await ok(api, path, metric="heart_rate", resolution="1m", **window)
    assert minutes["items"] == [
        {"bucket": "2026-03-01T08:00:00+00:00", "min": 60.0, "max": 100.0, "avg": 230 / 3, "n": 3},
        {"bucket": "2026-03-01T08:01:00+00:00", "min": 90.0, "max": 90.0, "avg": 90.0, "n": 1},
        {"bucket": "2026-03-01T09:00:00+00:00", "min": 40.0, "max": 40.0, "avg": 40.0, "n": 1},
    ]
    hours = await ok(api, path, metric="heart_rate", resolution="1h", **window)
    assert hours["items"] == [
        {"bucket": "2026-03-01T08:00:00+00:00", "min": 60.0, "max": 100.0, "avg": 80.0, "n": 4},
        {"bucket": "2026-03-01T09:00:00+00:00", "min": 40.0, "max": 40.0, "avg": 40.0, "n": 1},
    ]


@pytest.mark.parametrize(
    ("span", "chosen"),
    [(6 * H, "raw"), (6 * H + S, "1m"), (7 * D, "1m"), (7 * D + S, "1h"), (365 * D, "1h")],
)
async def test_auto_resolution_follows_the_length_of_the_range(
    api: httpx.AsyncClient, span: timedelta, chosen: str
) -> None:
    window = {"from": iso(T0), "to": iso(T0 + span)}
    for query in ({}, {"resolution": "auto"}):  # auto is the default
        page = await ok(api, "/v1/patients/p-none/readings", metric="spo2", **window, **query)
        assert page["resolution"] == chosen


async def test_a_long_range_read_as_buckets_agrees_with_its_raw_readings(
    api: httpx.AsyncClient, database_url: str
) -> None:
    """Three days, one reading every 7 minutes from two devices: auto picks minute buckets,
    and they hold exactly the raw readings of the range, paged through either way."""
    p = patient()
    rows = [
        row(p, "resp_rate", T0 + i * 7 * M, 12.0 + i % 9, device=f"w{i % 2}")
        for i in range(3 * 24 * 60 // 7)
    ]
    await store_rows(database_url, rows)
    path = f"/v1/patients/{p}/readings"
    window = {"from": iso(T0 + 5 * H), "to": iso(T0 + 2 * D + 5 * H)}
    buckets = await all_pages(api, path, metric="resp_rate", limit=100, **window)
    raw = await all_pages(api, path, metric="resp_rate", limit=100, resolution="raw", **window)
    start, end = T0 + 5 * H, T0 + 2 * D + 5 * H
    expected = [r for r in rows if start <= r[2] < end]
    assert [(x["value"], x["device_id"]) for x in raw] == [(r[4], r[3]) for r in expected]
    assert sum(b["n"] for b in buckets) == len(expected) == len(buckets)
    assert [b["min"] for b in buckets] == [r[4] for r in expected]
    hours = await all_pages(api, path, metric="resp_rate", limit=7, resolution="1h", **window)
    assert sum(h["n"] for h in hours) == len(expected) and len(hours) == 48


async def test_paging_has_no_gaps_or_duplicates(api: httpx.AsyncClient, database_url: str) -> None:
    """Readings of two devices at shared instants: page boundaries fall between rows with
    the same time, and the keyset (t, device) neither skips nor repeats one."""
    p = patient()
    rows = [
        row(p, "spo2", T0 + (i // 3) * S, 90.0 + i % 10, device=f"w{i % 3}") for i in range(301)
    ]
    await store_rows(database_url, rows)
    path, window = f"/v1/patients/{p}/readings", {"from": iso(T0), "to": iso(T0 + H)}
    expected = [(r[2], r[3]) for r in sorted(rows, key=lambda r: (r[2], r[3]))]
    for limit in (1, 7, 100, 301):
        items = await all_pages(api, path, metric="spo2", resolution="raw", limit=limit, **window)
        got = [(datetime.fromisoformat(x["t"]), x["device_id"]) for x in items]
        assert got == expected, limit
    one = await ok(api, path, metric="spo2", resolution="raw", limit=301, **window)
    assert one["next_cursor"] is None and len(one["items"]) == 301
    default = await ok(api, path, metric="spo2", resolution="raw", **window)
    assert len(default["items"]) == 301  # the default limit (1000) capped at the max (500)


# --- alerts ------------------------------------------------------------------------------


async def test_alerts_newest_first_by_range_and_state_with_paging(
    api: httpx.AsyncClient, database_url: str
) -> None:
    p = patient()
    starts = [T0 + i * H for i in range(12)]
    await store_alerts(database_url, p, starts)
    await store_alerts(database_url, patient(), [T0])  # someone else's
    path = f"/v1/patients/{p}/alerts"
    everything = await ok(api, path)
    assert len(everything["items"]) == 24 and everything["next_cursor"] is None
    ats = [x["at"] for x in everything["items"]]
    assert ats == sorted(ats, reverse=True)
    first = everything["items"][-1]
    assert first == {
        "alert_id": contract.alert_id(p, "spo2_low", int(T0.timestamp() * 1000)),
        "state": "opened", "rule": "spo2_low", "severity": "high", "retrospective": False,
        "suppressed": False,
        "episode_start": "2026-03-01T08:00:00+00:00", "at": "2026-03-01T08:00:00+00:00",
        "detected_at": "2026-03-01T08:00:00.005000+00:00", "metric": "spo2", "value": 88.0,
        "device_id": "w1", "detail": "",
    }  # fmt: skip
    window = {"from": iso(T0 + 2 * H), "to": iso(T0 + 5 * H)}
    ranged = await ok(api, path, **window)
    assert [x["at"][11:19] for x in ranged["items"]] == [
        "12:10:00", "12:00:00", "11:10:00", "11:00:00", "10:10:00", "10:00:00",
    ]  # fmt: skip
    opened = await ok(api, path, state="opened", **window)
    assert [x["state"] for x in opened["items"]] == ["opened"] * 3
    for limit in (1, 5, 24):
        paged = await all_pages(api, path, limit=limit)
        assert paged == everything["items"], limit
    paged_opened = await all_pages(api, path, limit=4, state="resolved")
    assert paged_opened == [x for x in everything["items"] if x["state"] == "resolved"]


# --- NEWS2 -------------------------------------------------------------------------------

# RCP 2017: resp 22 -> 2, SpO2 95 (scale 1) -> 1, air -> 0, systolic 105 -> 1,
# pulse 115 -> 2, alert -> 0, 38.5 °C -> 1: 7, high.


async def test_current_news2_is_the_latest_score_the_processor_computed(
    api: httpx.AsyncClient, database_url: str
) -> None:
    p = patient()
    await store_scores_computed_from(
        database_url,
        [
            vitals_upload(p, T0 - 2 * H, heart_rate=40.0),  # one parameter: no score
            vitals_upload(p, T0 - 10 * M, **VITALS),  # 7, high
            vitals_upload(p, T0 + 20 * M, heart_rate=40.0),  # pulse 3 (red): 8
        ],
    )
    path = f"/v1/patients/{p}/news2"
    score = await ok(api, path, at=iso(T0))
    assert score["patient_id"] == p and score["at"] == "2026-03-01T08:00:00+00:00"
    assert score["t"] == "2026-03-01T07:50:00+00:00"
    assert (score["news2"], score["band"], score["red"], score["partial"]) == (
        7, "high", False, False,
    )  # fmt: skip
    assert score["spo2_scale"] == 1 and score["missing"] == []
    assert score["parameters"]["heart_rate"] == {
        "points": 2, "value": 115.0, "t": "2026-03-01T07:50:00+00:00", "age_s": 0,
    }  # fmt: skip
    assert {k: v["points"] for k, v in score["parameters"].items()} == {
        "resp_rate": 2, "spo2": 1, "supplemental_o2": 0, "systolic_bp": 1, "heart_rate": 2,
        "consciousness": 0, "body_temp": 1,
    }  # fmt: skip
    later = await ok(api, path, at=iso(T0 + 30 * M))
    assert (later["t"], later["news2"], later["red"]) == ("2026-03-01T08:20:00+00:00", 8, True)
    assert later["parameters"]["spo2"]["age_s"] == 30 * 60  # measured 30 minutes before
    assert (await ok(api, path))["news2"] == 8  # default at: now

    # Before the first score (the lone heart rate 2 hours before had too few parameters).
    early = await get(api, path, at=iso(T0 - H))
    assert early.status_code == 404 and early.json()["code"] == "news2_not_available"
    assert early.headers["content-type"] == "application/problem+json"
    nobody = await get(api, f"/v1/patients/{patient()}/news2")
    assert nobody.status_code == 404 and nobody.json()["code"] == "news2_not_available"


async def test_news2_history_pages_every_score_in_time_order(
    api: httpx.AsyncClient, database_url: str
) -> None:
    p = patient()
    pulses = [115.0, 116.0, 40.0, 70.0, 135.0, 136.0, 80.0]  # 2, 2, 3, 0, 3, 3, 0 points
    await store_scores_computed_from(
        database_url,
        [vitals_upload(p, T0 + i * M, **{**VITALS, "heart_rate": v}) for i, v in enumerate(pulses)],
    )
    path = f"/v1/patients/{p}/news2/history"
    everything = await ok(api, path)
    # Only changes are stored: 116 /min scores as 115 did, 136 as 135.
    assert [(x["t"], x["news2"]) for x in everything["items"]] == [
        (iso(T0 + i * M).replace("Z", "+00:00"), n)
        for i, n in ((0, 7), (2, 8), (3, 5), (4, 8), (6, 5))
    ]
    assert everything["next_cursor"] is None and everything["patient_id"] == p
    for limit in (1, 2, 4):
        assert await all_pages(api, path, limit=str(limit)) == everything["items"]
    window = await ok(api, path, **{"from": iso(T0 + 2 * M), "to": iso(T0 + 4 * M)})
    assert [x["news2"] for x in window["items"]] == [8, 5]
    assert (await ok(api, f"/v1/patients/{patient()}/news2/history"))["items"] == []


# --- every bad parameter -----------------------------------------------------------------

GOOD = {"metric": "spo2", "from": "2026-03-01T08:00:00Z", "to": "2026-03-01T09:00:00Z"}
RAW_CURSOR = encode_cursor(Cursor("readings:p-1:spo2:raw", T0, ("w1",)), CURSOR_KEY.encode())
# The same position signed with another key, and issued for another patient.
FOREIGN_CURSOR = encode_cursor(Cursor("readings:p-1:spo2:raw", T0, ("w1",)), b"k" * 32)
OTHER_PATIENT_CURSOR = encode_cursor(
    Cursor("readings:p-2:spo2:raw", T0, ("w1",)), CURSOR_KEY.encode()
)


@pytest.mark.parametrize(
    ("route", "query", "code"),
    [
        ("readings", {**GOOD, "metric": None}, "missing_parameter"),
        ("readings", {**GOOD, "metric": "mood"}, "unknown_metric"),
        ("readings", {**GOOD, "from": None}, "missing_parameter"),
        ("readings", {**GOOD, "to": None}, "missing_parameter"),
        ("readings", {**GOOD, "from": "yesterday"}, "bad_time"),
        ("readings", {**GOOD, "to": "2026-03-01T09:00:00"}, "bad_time"),  # no offset
        ("readings", {**GOOD, "to": GOOD["from"]}, "bad_range"),
        ("readings", {**GOOD, "resolution": "5m"}, "bad_resolution"),
        ("readings", {**GOOD, "limit": "0"}, "bad_limit"),
        ("readings", {**GOOD, "limit": "501"}, "bad_limit"),
        ("readings", {**GOOD, "limit": "ten"}, "bad_limit"),
        ("readings", {**GOOD, "cursor": "not a cursor"}, "bad_cursor"),
        ("readings", {**GOOD, "cursor": "WzEsMiwzXQ"}, "bad_cursor"),  # [1,2,3]
        ("readings", {**GOOD, "cursor": RAW_CURSOR, "resolution": "1m"}, "bad_cursor"),
        ("readings", {**GOOD, "cursor": RAW_CURSOR, "metric": "heart_rate"}, "bad_cursor"),
        ("readings", {**GOOD, "cursor": FOREIGN_CURSOR, "resolution": "raw"}, "bad_cursor"),
        ("readings", {**GOOD, "cursor": OTHER_PATIENT_CURSOR, "resolution": "raw"}, "bad_cursor"),
        ("readings", {**GOOD, "cursor": RAW_CURSOR[:-2] + "AA", "resolution": "raw"},
         "bad_cursor"),  # a changed signature
        ("readings", {**GOOD, "cursor": "WzAsWyJ3MSJdXQ", "resolution": "raw"},
         "bad_cursor"),  # [0,["w1"]] unsigned
        ("readings", {**GOOD, "form": "2026-01-01T00:00:00Z"}, "unknown_parameter"),
        ("alerts", {"state": "closed"}, "bad_state"),
        ("alerts", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "bad_range"),
        ("alerts", {"to": "soon"}, "bad_time"),
        ("alerts", {"limit": "-1"}, "bad_limit"),
        ("alerts", {"cursor": RAW_CURSOR}, "bad_cursor"),
        ("alerts", {"cursor": encode_cursor(Cursor("alerts:p-2:any", T0, ("x", "opened")),
                                            CURSOR_KEY.encode())}, "bad_cursor"),
        ("alerts", {"metric": "spo2"}, "unknown_parameter"),
        ("news2", {"at": "noon"}, "bad_time"),
        ("news2", {"from": GOOD["from"]}, "unknown_parameter"),
        ("news2/history", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
         "bad_range"),
        ("news2/history", {"to": "soon"}, "bad_time"),
        ("news2/history", {"limit": "0"}, "bad_limit"),
        ("news2/history", {"cursor": RAW_CURSOR}, "bad_cursor"),
        ("news2/history", {"at": GOOD["from"]}, "unknown_parameter"),
    ],
)  # fmt: skip
async def test_every_bad_parameter_is_a_400_problem(
    api: httpx.AsyncClient, route: str, query: dict[str, str | None], code: str
) -> None:
    given = {k: v for k, v in query.items() if v is not None}
    answer = await get(api, f"/v1/patients/p-1/{route}", **given)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == code and problem["type"] == f"urn:vitals:problem:{code}"
    assert problem["status"] == 400 and problem["detail"]


async def test_repeated_parameters_and_long_patient_ids_are_refused(
    api: httpx.AsyncClient,
) -> None:
    twice = await api.get(
        "/v1/patients/p-1/readings?metric=spo2&metric=heart_rate&from=2026-03-01T08:00:00Z"
        "&to=2026-03-01T09:00:00Z",
        headers=AUTH,
    )
    assert twice.status_code == 400 and twice.json()["code"] == "repeated_parameter"
    long = await get(api, f"/v1/patients/{'p' * 129}/readings", **GOOD)
    assert long.status_code == 400 and long.json()["code"] == "bad_patient_id"
    unknown_route = await get(api, "/v1/patients/p-1/vitals")
    assert unknown_route.status_code == 404
    assert unknown_route.headers["content-type"] == "application/problem+json"

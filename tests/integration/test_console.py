"""The console in a real browser: Debian's Chromium, headless, driven by playwright-core
(tests/support/console/drive.mjs, installed by `make test`) against the read API on loopback with
data stored by the sinks' own statements. Screenshots go to .local/console/. The live
board (a network cut, a revoked key, the figures) is test_console_live.py's."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from frontdoor import registry_store
from tests.support.browser import DRIVER, SHOTS, driver_problem
from tests.support.cli import CLI
from tests.support.ids import patient, uid
from tests.support.polling import until
from tests.support.readapi import bearer, quick, row, running, store_open, store_rows
from vitals.settings import LOCAL_READER_TOKEN

pytestmark = pytest.mark.integration


async def test_sign_in_see_the_board_acknowledge_record_an_outcome_and_reconnect(
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    if problem := driver_problem():
        pytest.fail(problem)
    team = uid("ward")
    calm, desaturating, stranger = patient(), patient(), patient()
    await registry_store.add_team(db, team, actor=CLI)
    await registry_store.assign_patients(db, team, [calm, desaturating], assign=True, actor=CLI)
    _, key = await registry_store.issue_key(
        db, "reader", "nurse-console", expires_at=None, actor=CLI, teams=[team]
    )
    now = datetime.now(UTC)
    await store_rows(
        database_url,
        [row(calm, "heart_rate", now - timedelta(seconds=40), 72.0),
         row(desaturating, "spo2", now - timedelta(seconds=20), 86.0),
         row(stranger, "spo2", now - timedelta(seconds=20), 80.0)],
    )  # fmt: skip
    alert = await store_open(db, desaturating)
    await store_open(db, stranger)
    SHOTS.mkdir(parents=True, exist_ok=True)

    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:

        async def loaded() -> bool:
            answer = await client.get("/v1/board", headers=bearer(key))
            return answer.status_code == 200 and len(answer.json()["patients"]) == 2

        await until(loaded, "the team key loaded", 10)
        url = f"{client.base_url}/console/"
        done = await asyncio.create_subprocess_exec(
            "node", str(DRIVER / "drive.mjs"), url, key, alert, str(SHOTS),
            cwd=DRIVER, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(done.communicate(), 120)
        page = await client.get("/console/")

    seen = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    assert done.returncode == 0, (seen, err.decode()[-2000:])
    assert page.headers["content-type"].startswith("text/html")
    assert seen["signin_visible"] and seen["wrong_key_board_hidden"]
    assert seen["signin_hidden_after"]
    assert "key" in seen["wrong_key_error"].lower()
    # Only the team's patients; the desaturating one (an open high alert) on top.
    assert seen["patients"] == [desaturating, calm]
    assert "spo2_low" in seen["top_row_text"] and "high" in seen["top_row_text"]
    assert seen["key_in_session_storage"] and seen["key_in_local_storage"] == 0
    assert seen["ack_text"] == "ack by nurse-console"
    assert seen["pwned"] == 0  # the note was never parsed as HTML
    assert "spo2_low" not in seen["after_outcome_top_row"]  # closed by its outcome
    assert seen["refusal"] == 409
    assert seen["signed_out"] and seen["key_after_signout"] is None
    assert (SHOTS / "board.png").stat().st_size > 10_000


async def test_the_board_is_for_readers_only(database_url: str) -> None:
    async with running(quick(database_url)) as client:
        anonymous = await client.get("/v1/board")
        extra = await client.get("/v1/board", params={"ward": "4B"}, headers=bearer("x" * 12))
        static = await client.get("/console/console.js")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "missing_credential"
    assert extra.status_code == 401  # the credential is checked first
    assert static.status_code == 200 and "sessionStorage" in static.text
    assert "innerHTML" not in static.text  # everything is rendered as text


async def test_board_parameters_are_refused(database_url: str) -> None:
    async with running(quick(database_url)) as client:
        bad = await client.get(
            "/v1/board", params={"ward": "4B"}, headers=bearer(LOCAL_READER_TOKEN)
        )
    assert bad.status_code == 400 and bad.json()["code"] == "unknown_parameter"

"""The console's patient and alarm-burden views in a real browser (Debian's Chromium,
headless, tests/support/console/views.mjs), and an alert left alone escalating on the board: the
read API on loopback, the alerts sink's escalator with a short time on a real broker, a
database of the test's own (the escalator looks at every alert stored). The README's
screenshots of both views are written to docs/ by this test."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from frontdoor import registry_store
from tests.support.browser import DRIVER, ROOT, SHOTS, driver_problem
from tests.support.cli import CLI
from tests.support.ids import patient, uid
from tests.support.inprocess import escalating
from tests.support.polling import until
from tests.support.readapi import HTML_NOTE, bearer, quick, row, running, store_open, store_rows
from vitals.settings import Settings

pytestmark = pytest.mark.integration


def _series(p: str, now: datetime) -> list[tuple]:
    """A day of vitals every 5 minutes and the last 50 minutes of heart rate every 15 s."""
    rows = []
    for i in range(288):
        t = now - timedelta(minutes=5 * i + 1)
        rows += [row(p, "heart_rate", t, round(80 + 15 * math.sin(i / 20), 1)),
                 row(p, "spo2", t, round(95 - 3 * math.sin(i / 30) ** 2, 1)),
                 row(p, "resp_rate", t, round(16 + 4 * math.sin(i / 25), 1))]  # fmt: skip
    rows += [row(p, "heart_rate", now - timedelta(seconds=15 * i + 7), 90.0 + i % 7, "w2")
             for i in range(200)]  # fmt: skip
    return rows


async def test_patient_and_burden_views_and_an_alert_left_alone_escalating(
    settings: Settings,
    fresh_url: str,
) -> None:
    if problem := driver_problem():
        pytest.fail(problem)
    team, watched, alone = uid("ward"), patient(), patient()
    device = uid("wrist")
    now = datetime.now(UTC)
    conn = await asyncpg.connect(fresh_url)
    try:
        await registry_store.add_team(conn, team, actor=CLI)
        await registry_store.assign_patients(conn, team, [watched, alone], assign=True, actor=CLI)
        _, key = await registry_store.issue_key(
            conn, "reader", "nurse-views", expires_at=None, actor=CLI, teams=[team]
        )
        await store_rows(fresh_url, [*_series(watched, now), row(alone, "spo2", now, 86.0)])
        for i, score in enumerate((1, 3, 5, 6, 4, 2, 1)):
            await conn.execute(
                "INSERT INTO news2_scores (patient_id, t, news2, band, red, partial, spo2_scale,"
                " parameters, computed_at) VALUES ($1, $2, $3, $4, false, false, 1, '{}', now())",
                watched, now - timedelta(hours=21 - 3 * i), score,
                "low" if score < 5 else "medium",
            )  # fmt: skip
        await conn.execute("INSERT INTO devices (device_id) VALUES ($1)", device)
        await conn.execute(
            "INSERT INTO device_patients (device_id, patient_id, valid_from) VALUES ($1, $2, $3)",
            device, watched, now - timedelta(days=2),
        )  # fmt: skip
        answered = uuid.UUID(await store_open(conn, watched))
        for state, outcome, note in (
            ("acknowledged", None, None), ("outcome", "false_alarm", HTML_NOTE),
        ):  # fmt: skip
            await conn.execute(
                "INSERT INTO alert_lifecycle (alert_id, state, patient_id, episode_start, at,"
                " actor_key_id, actor, outcome, note) SELECT alert_id, $2, patient_id,"
                " episode_start, now(), 'k1', 'nurse-views', $3, $4 FROM alerts"
                " WHERE alert_id = $1 AND state = 'opened'",
                answered, state, outcome, note,
            )  # fmt: skip
        await store_open(conn, alone)  # left alone: escalates 20 s after publication
    finally:
        await conn.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    esc = settings.model_copy(
        update={"database_url": fresh_url, "escalation": "high:20",
                "escalation_check_interval_s": 0.2}
    )  # fmt: skip

    async with (
        running(quick(fresh_url, api_rate_limit_per_s=0)) as client,
        escalating(esc) as escalator,
    ):

        async def loaded() -> bool:
            answer = await client.get("/v1/board", headers=bearer(key))
            return answer.status_code == 200 and len(answer.json()["patients"]) == 2

        await until(loaded, "the team key loaded", 10)
        done = await asyncio.create_subprocess_exec(
            "node", str(DRIVER / "views.mjs"), f"{client.base_url}/console/", key, watched,
            alone, str(SHOTS), str(SHOTS),
            cwd=DRIVER, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(done.communicate(), 180)
        assert escalator.leading

    seen = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    assert done.returncode == 0, (seen, err.decode()[-2000:])
    # Opened from the board's link; the board gives way to the patient.
    assert seen["hash"] == f"#patient/{watched}" and seen["board_hidden"]
    assert seen["title"] == f"Patient {watched}"
    charts = {c["caption"]: c for c in seen["charts_24h"]}
    for caption in ("NEWS2", "Heart rate (/min)", "SpO2 (%)", "Respiratory rate (/min)"):
        assert charts[caption]["lines"] >= 1, (caption, charts)
    assert "7 points" in charts["NEWS2"]["label"] and "highest 6" in charts["NEWS2"]["label"]
    assert charts["Glucose (mmol/L)"]["label"] is None  # no data, said in words rather than drawn
    # 24 h: per-minute buckets, one per 5-minute reading (a few may have left the range
    # by the time the page asks); the last hour: the raw readings, 15 s apart.
    assert 280 <= _points(charts["SpO2 (%)"]) <= 288
    hour = {c["caption"]: c for c in seen["charts_1h"]}
    assert _points(hour["Heart rate (/min)"]) >= 200  # raw: an hour has 60 minute buckets
    assert _points(hour["NEWS2"]) == 1  # the score in force (3 h old) carried to the start
    assert seen["pressed_24h"] == "true"
    assert len(seen["history"]) == 1 and "false alarm" in seen["history"][0]
    assert "nurse-views" in seen["history"][0]
    assert seen["note_html"] == [HTML_NOTE.replace("&", "&amp;").replace("<", "&lt;").replace(
        ">", "&gt;")]  # fmt: skip
    assert len(seen["devices"]) == 1 and device in seen["devices"][0]
    assert "now (current)" in seen["devices"][0]
    assert seen["tablet_overflow"] <= 0  # nothing wider than a tablet
    assert seen["tablet_outcome_visible"]
    rules = {r[0]: r for r in seen["burden_rows"]}
    assert rules["spo2_low"][1] == "2" and rules["spo2_low"][3] == "1 / 2"
    assert rules["spo2_low"][8] == "100 %"  # the one outcome recorded was a false alarm
    assert "patient-days" in seen["burden_summary"]
    assert seen["escalated_before"] == 0
    assert seen["escalated_text"] == "escalated L1"
    assert seen["patient_hidden_on_board"] and seen["views_hidden_after_signout"]
    for name in ("console-patient.png", "console-burden.png"):
        assert (SHOTS / name).stat().st_size > 10_000  # `make screenshots` puts them in docs/


def _points(chart: dict) -> int:
    return int(chart["label"].split(": ", 1)[1].split(" points", 1)[0])


async def test_every_console_script_is_served_and_renders_text_only(fresh_url: str) -> None:
    scripts = sorted(p.name for p in (ROOT / "readapi" / "console").glob("*.js"))
    assert {"patient.js", "burden.js", "chart.js", "views.js"} <= set(scripts)
    async with running(quick(fresh_url)) as client:
        page = await client.get("/console/")
        served = {name: await client.get(f"/console/{name}") for name in scripts}
    for name, answer in served.items():
        assert answer.status_code == 200, name
        assert "innerHTML" not in answer.text and "insertAdjacentHTML" not in answer.text, name
        assert f'<script src="{name}"></script>' in page.text, name

"""The simulator over real HTTP: a gateway back after hours offline uploads its whole
backlog first, paged as a real gateway pages it, and the gateway takes all of it."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

from tests.support.gateway import limits, running
from tests.support.topics import produced
from vitals import contract
from vitals.settings import Settings


async def test_a_gateway_back_after_hours_offline_uploads_its_backlog_in_pages(
    settings: Settings,
) -> None:
    settings = limits(settings, max_readings_per_upload=500, max_body_bytes=1_048_576)
    settings = settings.model_copy(update={"max_decompressed_bytes": 4_194_304})
    async with running(settings) as client:
        started = contract.now_ms()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vitalsctl.cli", "simulate", "--url", str(client.base_url),
            "--patients", "5", "--offline-hours", "3", "--backlog-minutes", "10",
            "--duration", "2", "--no-events", "--glitch-rate", "0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, stderr.decode()
        uploads = [contract.decode_upload(r.value) for r in await produced(settings)]

    first: dict[str, int] = {}
    pages: dict[str, int] = defaultdict(int)
    for upload in uploads:
        assert len(upload.readings) <= 500  # a backlog goes up in pages
        first[upload.patient_id] = min(
            first.get(upload.patient_id, started), *(r.t for r in upload.readings)
        )
        pages[upload.patient_id] += 1
    assert set(first) == {f"p-{i:05d}" for i in range(5)}
    hours_back = {p: (started - t) / 3_600_000 for p, t in first.items()}
    assert 2.9 < hours_back.pop("p-00004") <= 3.01, "the offline gateway's backlog"
    for patient, back in hours_back.items():  # the others: the 10-minute backlog only
        assert 0.15 < back <= 0.17, patient
    # Three hours of a watch's samples (every 5 s, two or more readings each) need pages.
    assert pages["p-00004"] >= 9 and max(pages[p] for p in hours_back) <= 2
    assert b'"failed": 0' in stderr or b'"failed":0' in stderr, stderr.decode()

"""`vitals status` against real infrastructure: a broker with the pipeline's topics, a
database, a gateway that answers and a read API that does not; exit 1 names what needs a
person, and --json says the same for scripts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from ingest.server import build_server as gateway_server
from tests.support.serving import serving
from vitals.settings import Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration


def status(settings: Settings, gateway_port: int, api_port: int, *args: str):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VITALS_")},
        "VITALS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "VITALS_DATABASE_URL": settings.database_url,
        "VITALS_TOPIC_PREFIX": settings.topic_prefix,
        "VITALS_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "VITALS_GATEWAY_PORT": str(gateway_port),
        "VITALS_API_PORT": str(api_port),
    }
    return subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_status_reports_each_part_and_fails_when_one_needs_a_person(
    settings: Settings,
) -> None:
    api_port = localinfra.free_port()  # nothing listens there
    server = gateway_server(settings.model_copy(update={"gateway_port": 0}))
    async with serving(server) as gateway_port:
        done = await asyncio.to_thread(status, settings, gateway_port, api_port, "--json")
        text = await asyncio.to_thread(status, settings, gateway_port, api_port)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert checks["broker and topics"]["ok"], checks
    assert checks["ready gateway"]["ok"], checks
    assert not checks["ready read API"]["ok"] and "no answer" in checks["ready read API"]["detail"]
    assert checks["dead letters (1 h)"] == {
        "name": "dead letters (1 h)",
        "ok": True,
        "detail": "0 parked",
        "value": 0,
    }
    assert checks["lag vitals-processor"]["detail"] == "never committed"
    assert checks["database size"]["ok"] and checks["database size"]["value"] > 0
    assert "newest reading" in checks and "last alert published" in checks
    assert text.returncode == 1
    assert any(line.startswith("!! ready read API") for line in text.stdout.splitlines())
    assert any(line.startswith("ok broker and topics") for line in text.stdout.splitlines())

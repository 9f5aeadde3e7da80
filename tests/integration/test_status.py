"""`vitals status` against real infrastructure: a broker with the pipeline's topics, a
database, a gateway that answers and a read API that does not; exit 1 names what needs a
person, and --json says the same for scripts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ingest.server import build_server as gateway_server
from tests.support.polling import until
from tests.support.serving import serving
from vitals.settings import Settings
from vitalsctl import localinfra, stages

pytestmark = pytest.mark.integration


def status(settings: Settings, gateway_port: int, api_port: int, *args: str, **more: str):
    env = {
        **more,
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
    # As migrated with the default settings, on a plain or a TimescaleDB server.
    assert checks["retention"]["ok"] and checks["retention"]["detail"] in (
        "plain PostgreSQL: `vitals db prune` daily",
        "as the settings say; alerts and outcomes kept",
    )
    assert text.returncode == 1
    assert any(line.startswith("!! ready read API") for line in text.stdout.splitlines())
    assert any(line.startswith("ok broker and topics") for line in text.stdout.splitlines())


async def test_status_shows_each_consumer_process_readiness_from_its_probe_port(
    settings: Settings, tmp_path: Path
) -> None:
    """The processor and both sinks run as real processes with probe ports; status asks
    each one's /readyz (VITALS_STATUS_PROBES) and names the one that does not answer."""
    ports = {name: localinfra.free_port() for name in stages.CONSUMERS}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VITALS_")},
        "VITALS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "VITALS_DATABASE_URL": settings.database_url,
        "VITALS_TOPIC_PREFIX": settings.topic_prefix,
        "VITALS_MIGRATE_ON_START": "false",
        # This test's own groups: no other test's members join their rebalances.
        "VITALS_PROCESSOR_GROUP": f"{settings.topic_prefix}processor",
        "VITALS_SINK_GROUP": f"{settings.topic_prefix}sink",
        "VITALS_ALERTS_GROUP": f"{settings.topic_prefix}alerts",
    }
    procs = {
        name: stages.start(
            name, {**env, "VITALS_PROBE_PORT": str(port)}, tmp_path / f"{name}.log",
            new_session=False,
        )
        for name, port in ports.items()
    }  # fmt: skip
    nobody = localinfra.free_port()  # a fourth consumer that is not running
    probes = ",".join(f"{n}=127.0.0.1:{p}" for n, p in {**ports, "processor-2": nobody}.items())
    try:
        async with httpx.AsyncClient(timeout=1) as client:

            async def all_ready() -> bool:
                for name, port in ports.items():
                    assert procs[name].poll() is None, (tmp_path / f"{name}.log").read_text()
                    try:
                        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
                    except httpx.HTTPError:
                        return False
                    if answer.status_code != 200:
                        return False
                return True

            await until(all_ready, "the three consumers ready", within_s=60)
        done = await asyncio.to_thread(
            status, settings, 1, 1, "--json", VITALS_STATUS_PROBES=probes
        )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    for name, port in ports.items():
        assert checks[f"ready {name}"] == {
            "name": f"ready {name}",
            "ok": True,
            "detail": f"http://127.0.0.1:{port}/readyz: ready",
            "value": None,
        }
    missing = checks["ready processor-2"]
    assert not missing["ok"] and missing["detail"].startswith(
        f"http://127.0.0.1:{nobody}/readyz: no answer"
    )
    assert done.returncode == 1


def test_status_probes_that_do_not_parse_are_refused_with_the_form_they_need() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", "status"],
        env={**os.environ, "VITALS_STATUS_PROBES": "processor=127.0.0.1"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "status_probes: 'processor=127.0.0.1' needs name=host:port" in done.stderr

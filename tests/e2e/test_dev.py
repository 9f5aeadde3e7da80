"""`make run` as a person sees it: `vitals dev` brings everything up, shows the simulator's
injected events as alerts, and stops every process cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from vitals import localinfra

pytestmark = pytest.mark.e2e


def test_dev_shows_alerts_for_injected_events_then_stops_cleanly(pg_server: str) -> None:
    name = f"vitals_dev_test_{uuid.uuid4().hex[:8]}"
    database_url = localinfra.create_database(pg_server, name)
    env = {
        **os.environ,
        "VITALS_DATABASE_URL": database_url,
        "VITALS_GATEWAY_PORT": str(localinfra.free_port()),
        "VITALS_API_PORT": str(localinfra.free_port()),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vitals.cli", "dev", "--patients", "6", "--duration", "95"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        localinfra.drop_database(pg_server, name)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for rule in ("spo2_low", "hr_high", "device_silence"):
        assert re.search(rf"ALERT opened .* {rule} +patient p-0000\d", out), (rule, out)
    stored = [int(n.replace(",", "")) for n in re.findall(r"rows in database +([\d,]+)", out)]
    assert stored and stored[-1] > 1000, out
    for process in ("simulator", "gateway", "api", "processor", "sink-timescale", "sink-alerts"):
        assert f"{process} stopped (exit 0)" in out, out

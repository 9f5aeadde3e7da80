"""`make run` as a person sees it: `vitals dev` brings everything up, shows the simulator's
injected events as alerts, and Ctrl-C stops every process cleanly; a stage that dies
stops the run with a non-zero exit instead of a demo that quietly shows less."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vitalsctl import localinfra, stages

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

RULES = ("spo2_low", "hr_high", "device_silence")
PROCESSES = stages.STOP_ORDER  # every stage of the one table, each named as it stops


@contextmanager
def dev_env(pg_server: str, **extra: str) -> Iterator[dict[str, str]]:
    name = f"vitals_dev_test_{uuid.uuid4().hex[:8]}"
    database_url = localinfra.create_database(pg_server, name)
    try:
        yield {
            **os.environ,
            "VITALS_DATABASE_URL": database_url,
            "VITALS_GATEWAY_PORT": str(localinfra.free_port()),
            "VITALS_API_PORT": str(localinfra.free_port()),
            **extra,
        }
    finally:
        localinfra.drop_database(pg_server, name)


def run_dev(env: dict[str, str], seen_enough: Callable[[str], bool], within_s: float):
    """`vitals dev --patients 6` until its output shows what the test waits for, then
    Ctrl-C (SIGINT, as a terminal sends it); SIGINT anyway after `within_s`. Returns the
    exit code, the output, and whether the wait was met."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitalsctl.cli", "dev", "--patients", "6"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        watchdog = threading.Timer(within_s, proc.send_signal, [signal.SIGINT])
        watchdog.start()
        out, met = "", False
        try:
            for line in proc.stdout:
                out += line
                if not met and seen_enough(out):
                    met = True
                    proc.send_signal(signal.SIGINT)
            proc.wait(timeout=90)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
        stderr.seek(0)
        return proc.returncode, out + stderr.read().decode(errors="replace"), met


def alerted(out: str) -> set[str]:
    return {r for r in RULES if re.search(rf"ALERT opened .* {r} +patient p-0000\d", out)}


def rows_stored(out: str) -> int:
    found = re.findall(r"stored +([\d,]+) rows", out)
    return int(found[-1].replace(",", "")) if found else 0


def vitals_beside(*args: str) -> subprocess.CompletedProcess[str]:
    """`vitals ARGS` in the folder `vitals dev` runs in, with no VITALS_* setting at all."""
    return subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("VITALS_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dev_shows_alerts_for_injected_events_and_ctrl_c_stops_everything(
    pg_server: str,
) -> None:
    beside: list[subprocess.CompletedProcess[str]] = []

    def seen_enough(out: str) -> bool:
        if alerted(out) != set(RULES) or rows_stored(out) <= 1000:
            return False
        # An operator's command beside the run reaches its database with no setting.
        beside.append(vitals_beside("devices", "list"))
        # `vitals status` beside it finds every consumer's probe port in the run file.
        beside.append(vitals_beside("status", "--json"))
        return True

    with dev_env(pg_server) as env:
        code, out, met = run_dev(env, seen_enough, 150)
    assert met, f"alerts seen: {sorted(alerted(out))}, rows {rows_stored(out)}\n{out}"
    assert code == 0, out
    assert beside[0].returncode == 0 and "watch-00000" in beside[0].stdout, beside[0]
    checks = {c["name"]: c for c in json.loads(beside[1].stdout)["checks"]}
    for consumer in ("processor", "sink-timescale", "sink-alerts"):
        assert checks[f"ready {consumer}"]["ok"], checks
    assert not (ROOT / ".local" / "dev.env").exists()  # removed with the run
    # The screen: human lines only, where to look next, figures that say what they are.
    assert not re.search(r"^\{", out, re.MULTILINE), out
    for port in (env["VITALS_GATEWAY_PORT"], env["VITALS_API_PORT"]):
        assert f"http://127.0.0.1:{port}  " in out and f"127.0.0.1:{port}/docs" in out, out
    assert ".local/logs/" in out and "from another folder, paste: export" in out, out
    assert "readings accepted and rejected per second" in out, out
    assert not re.search(r"(accepted|rejected) +-", out), out
    for process in PROCESSES:
        assert f"{process} stopped (exit 0)" in out, out
    assert re.search(r"\d\d:\d\d:\d\d  stopped$", out, re.MULTILINE), out


def test_dev_stops_everything_and_fails_when_a_stage_dies(pg_server: str, tmp_path) -> None:
    """A stage that exits on its own ends the run: the other processes are stopped and
    `vitals dev` exits 1. Here two do, both refused a rules file that is not there: the
    processor (the detectors' rules) and the alerts sink (the escalation times per cohort);
    the run names the first it saw (the other may have exited too, or be stopped while it
    was still starting)."""
    missing = tmp_path / "no-such-rules.toml"
    with dev_env(pg_server, VITALS_RULES_FILE=str(missing)) as env:
        code, out, _ = run_dev(env, lambda out: False, 120)  # it must end by itself
    assert code == 1, out
    assert not re.search(r"^\{", out, re.MULTILINE), out
    first = re.search(r"(processor|sink-alerts) exited with [1-9]", out)
    assert first, out
    assert f"stopped: {first.group(1)} exited on its own" in out, out
    for process in ("gateway", "api", "sink-timescale", "sink-fhir-notify"):
        assert f"{process} stopped (exit 0)" in out, out

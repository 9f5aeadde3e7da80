"""What `vitals dev` prints: figures that never go negative, rejections by code, warnings
for 5xx answers, failed background tasks and a registry that stopped reloading; and the
run file that lets commands beside `make run` find its database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vitalsctl import devrun, devscreen

GATEWAY_METRICS = """\
# HELP vitals_gateway_readings_accepted_total Readings accepted into Kafka
# TYPE vitals_gateway_readings_accepted_total counter
vitals_gateway_readings_accepted_total 4200.0
vitals_gateway_readings_rejected_total{code="out_of_range"} 11.0
vitals_gateway_readings_rejected_total{code="time_out_of_range"} 1.0
vitals_gateway_requests_total{route="/v1/readings",status="202"} 300.0
vitals_gateway_requests_total{route="/v1/admin/devices",status="500"} 2.0
vitals_registry_age_seconds{registry="gateway"} 4.5
vitals_background_task_failures_total{task="registry-refresh"} 0.0
"""


def test_metrics_are_read_by_name_and_label() -> None:
    sample = devscreen.parse(GATEWAY_METRICS, at=10.0)
    assert sample.accepted == 4200
    assert sample.rejected == {"out_of_range": 11, "time_out_of_range": 1}
    assert sample.server_errors == {("/v1/admin/devices", "500"): 2}
    assert sample.registry_age_s == {"gateway": 4.5}


def test_the_summary_names_each_figure_and_rejections_by_code() -> None:
    line = devscreen.summary(devscreen.parse(GATEWAY_METRICS, 10.0), devscreen.Sample(0.0), 1234)
    assert line.startswith("accepted     420/s  rejected   1.2/s  stored     1,234 rows")
    assert "rejected 12: out_of_range 11, time_out_of_range 1" in line


def test_an_unreadable_gateway_shows_n_a_never_a_negative_rate() -> None:
    before = devscreen.parse(GATEWAY_METRICS, 10.0)
    line = devscreen.summary(None, before, None, "ConnectError")
    assert line.startswith("accepted     n/a/s  rejected   n/a/s  stored       n/a rows")
    assert "gateway metrics unreadable: ConnectError" in line
    restarted = devscreen.parse("vitals_gateway_readings_accepted_total 3.0\n", 20.0)
    line = devscreen.summary(restarted, before, 5)
    assert "accepted     n/a/s" in line and "-" not in line.split("(")[0]


def test_new_server_errors_and_a_stale_registry_are_warned_once() -> None:
    stale: set[str] = set()
    first = devscreen.parse(GATEWAY_METRICS, 10.0)
    lines = devscreen.warnings("gateway", first, None, 30.0, stale)
    assert any("answered 500 2× on /v1/admin/devices" in line for line in lines), lines
    old = devscreen.parse(GATEWAY_METRICS.replace("} 4.5", "} 45.0"), 20.0)
    lines = devscreen.warnings("gateway", old, first, 30.0, stale)
    assert len(lines) == 1 and "registry not reloaded for 45 s" in lines[0], lines
    assert devscreen.warnings("gateway", old, old, 30.0, stale) == []
    assert devscreen.warnings("gateway", first, old, 30.0, stale) == [
        "gateway's gateway registry reloaded again"
    ]
    failed = devscreen.parse(GATEWAY_METRICS.replace("} 0.0", "} 1.0"), 30.0)
    assert (
        "registry-refresh failed 1×" in devscreen.warnings("gateway", failed, first, 30, stale)[0]
    )


def test_the_run_file_counts_only_while_its_writer_lives(tmp_path) -> None:
    path = devrun.run_file(tmp_path)
    assert devrun.write(path, {"VITALS_DATABASE_URL": "postgresql://x/vitals_dev"})
    assert devrun.active(path) == path
    assert not devrun.write(path, {})  # a second run does not take over a live one's
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    path.write_text(path.read_text().replace(f"'{os.getpid()}'", f"'{dead}'"))
    assert devrun.active(path) is None  # left by a run that was killed
    assert devrun.write(path, {"VITALS_DATABASE_URL": "postgresql://y/vitals_dev"})
    devrun.remove(path)
    assert not path.exists()


def test_a_page_that_is_not_prometheus_text_is_an_error_not_figures() -> None:
    # dev.py shows "n/a" for it, as for a gateway that does not answer.
    with pytest.raises(ValueError):
        devscreen.parse("<html>502 Bad Gateway</html>\n", 0.0)

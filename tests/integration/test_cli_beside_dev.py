"""An operator command run beside `make run` reaches its database with no setting: `vitals
dev` leaves its URLs in .local/dev.env (vitalsctl/devrun.py) and the CLI takes them as
defaults while that run lives; the environment still wins."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vitalsctl import devrun

pytestmark = pytest.mark.integration


def vitals_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    return subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", *args],
        cwd=folder,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_devices_register_beside_a_dev_run_needs_no_setting(
    database_url: str, tmp_path: Path
) -> None:
    # This test process stands in for the live `vitals dev` that wrote the file.
    assert devrun.write(devrun.run_file(tmp_path / ".local"), {"VITALS_DATABASE_URL": database_url})
    device = f"watch-{uuid.uuid4().hex[:8]}"
    done = vitals_in(tmp_path, "devices", "register", device, "--patient", "p-1", "--gateway", "g1")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = vitals_in(tmp_path, "devices", "list")
    assert device in listed.stdout, listed.stdout + listed.stderr

    # The environment wins over the run file: a database that is not there fails.
    elsewhere = database_url.rsplit("/", 1)[0] + "/no_such_database_here"
    done = vitals_in(tmp_path, "devices", "list", VITALS_DATABASE_URL=elsewhere)
    assert done.returncode == 1 and "no_such_database_here" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("plural", "extra", "holder"),
    [
        ("gateways", (), "on that gateway"),
        ("admins", (), "calls the gateway's admin API"),
        ("readers", ("--all-patients",), "the reading application"),
    ],
)
def test_an_issued_key_names_who_keeps_it(
    database_url: str, tmp_path: Path, plural: str, extra: tuple[str, ...], holder: str
) -> None:
    name = f"k-{uuid.uuid4().hex[:8]}"
    done = vitals_in(tmp_path, plural, "issue", name, *extra, VITALS_DATABASE_URL=database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert holder in done.stdout and "(shown once; " in done.stdout, done.stdout
    assert "store it in the" not in done.stdout

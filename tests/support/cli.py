"""Run the `vitals` command in a child process, as an operator would, and check its exit."""

from __future__ import annotations

import os
import subprocess
import sys


def vitals(
    *args: str, database_url: str, code: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`vitals ARGS` against `database_url`; asserts the exit status is `code`."""
    done = subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", *args],
        env={**os.environ, "VITALS_DATABASE_URL": database_url, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stdout + done.stderr
    return done


CLI = ("cli", "pytest")

"""Progress of long work (vitals/progress.py): drawn on a terminal, nothing off one.

The terminal is a real pseudo-terminal (tests/support/terminal.py) holding the child's stdout and
stderr, as a person's shell would; off it, the same command's output is captured by pipes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.terminal import on_pty

# Run from a folder of their own (no `vitals dev` run file there) and without VITALS_*.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}

# A stand-in for any long command's loop: three items through the shared helper.
LOOP = (
    "from vitals import progress\n"
    "with progress.bar('counting', 3, 'items') as shown:\n"
    "    for _ in range(3):\n"
    "        shown.update(1)\n"
    "print('done')\n"
)


def off_terminal(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=ENV
    )


def test_the_shared_bar_shows_done_rate_and_time_left_on_a_terminal_only(
    tmp_path: Path,
) -> None:
    code, screen = on_pty(sys.executable, "-c", LOOP, cwd=tmp_path, env=ENV)
    assert code == 0, screen
    assert "counting: 100%" in screen and "3/3" in screen, screen
    assert "items/s]" in screen and "<00:00" in screen, screen  # rate, time left

    piped = off_terminal(sys.executable, "-c", LOOP, cwd=tmp_path)
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "done\n", "")


def test_validate_rhythm_shows_its_series_on_a_terminal_and_prints_only_its_report_off_one(
    tmp_path: Path,
) -> None:
    argv = (sys.executable, "-m", "vitalsctl.cli", "validate", "rhythm", "--af-series", "1")
    code, screen = on_pty(*argv, "--out", str(tmp_path / "tty.json"), cwd=tmp_path, env=ENV)
    assert code == 0, screen
    assert "validate rhythm: 100%" in screen and "3/3" in screen, screen
    assert "series/s]" in screen, screen

    piped = off_terminal(*argv, "--out", str(tmp_path / "pipe.json"), cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and "\r" not in piped.stdout and "100%" not in piped.stdout
    assert piped.stdout.startswith("series ") and "written to" in piped.stdout

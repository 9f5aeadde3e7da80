"""The settings of the `vitals dev` run in this folder, for the commands run beside it.

`make run` picks its broker's ports and, without a PostgreSQL at 127.0.0.1:5432, its
database's port when it starts; no fixed default could name them. So `vitals dev` writes
what it chose to `.local/dev.env` (VITALS_* lines, as a shell or a `.env` reader takes
them) and removes the file when it stops. Every other `vitals` command run in this folder
reads it as defaults, below the environment and the flags, while the run that wrote it is
alive: `vitals devices register` beside `make run` reaches make run's database with no
setting. The file names its writer's process id so that a file left by a killed run is
ignored, and a second `vitals dev` in the same folder does not take over the first's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PID_KEY = "VITALS_DEV_PID"  # not a setting: Settings ignores it


def run_file(folder: Path | None = None) -> Path:
    return (folder or Path.cwd() / ".local") / "dev.env"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("'")
    return values


def active(path: Path) -> Path | None:
    """`path` if a live `vitals dev` wrote it, else None."""
    try:
        pid = int(_read(path).get(PID_KEY, "0"))
    except (OSError, ValueError):
        return None
    return path if pid > 0 and _alive(pid) else None


def write(path: Path, settings: Mapping[str, str]) -> bool:
    """Write this run's settings; False (nothing written) while another live run owns it."""
    if active(path) is not None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by `vitals dev` for the commands run beside it; removed when it stops"]
    lines += [f"{name}='{value}'" for name, value in {**settings, PID_KEY: os.getpid()}.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True


def remove(path: Path) -> None:
    """Remove the file if this process wrote it."""
    try:
        if int(_read(path).get(PID_KEY, "0")) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def export_line(settings: Mapping[str, str]) -> str:
    """The one line to paste in a shell elsewhere to reach this run."""
    return "export " + " ".join(f"{name}='{value}'" for name, value in settings.items())

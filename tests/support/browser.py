"""The console's browser tests: where the driver (a Node project beside this module, in
console/) and the screenshots are, and what is missing for them to run."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "support" / "console"
# Screenshots and figures of a run: under .local/, so that a test run leaves the tree clean.
SHOTS = ROOT / ".local" / "console"
CHROMIUM = Path("/usr/bin/chromium")


def driver_problem() -> str | None:
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium: `make test` installs it (apt-get install chromium)"
    if shutil.which("node") is None or not (DRIVER / "node_modules" / "playwright-core").exists():
        return "no playwright-core: `make test` runs npm ci in tests/support/console"
    return None

"""`python -m bench`'s command-line options (`make bench`; BENCH_ARGS passes more)."""

from __future__ import annotations

import argparse
from pathlib import Path

# The project against its peers (issue 7): what `make bench` runs.
PEER_SCENARIOS = ("gateway", "sink", "processor", "e2e", "replay", "restart")
# Storage figures (issue 4), run when named: `--only storage export`.
STORAGE_SCENARIOS = ("storage", "export")
SCENARIOS = PEER_SCENARIOS + STORAGE_SCENARIOS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    parser.add_argument("--reps", type=int, help="repetitions per scenario (default by mode)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(PEER_SCENARIOS),
        metavar="SCENARIO",
        help=f"default: {' '.join(PEER_SCENARIOS)}; also {' '.join(STORAGE_SCENARIOS)}",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--storage-rows",
        type=int,
        metavar="N",
        help="readings the storage scenario loads (default 2,000,000; 200,000 with --quick)",
    )
    parser.add_argument(
        "--export-rows",
        type=int,
        nargs="+",
        metavar="N",
        help="readings per export (default 100,000 1,000,000 3,000,000; a tenth with --quick)",
    )

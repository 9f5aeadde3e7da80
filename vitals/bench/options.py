"""`vitals bench`'s command-line options; light on purpose, since every `vitals` command
builds the whole parser (the harness itself is imported only when `bench` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

SCENARIOS = ("gateway", "sink", "processor", "e2e")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    parser.add_argument("--reps", type=int, help="repetitions per scenario (default by mode)")
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="SCENARIO"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))

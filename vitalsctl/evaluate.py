"""`vitals validate rhythm` and `vitals burden`: the command lines of the evaluation tools.

Their arguments are defined here, light, so that building the parser (every `vitals`
command, `--help` too) imports neither the evaluation nor the processor's engine; the
work itself (evaluation/, the `evaluation` extra) is imported only when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vitals.settings import Settings


def add_rhythm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path(".local/validate-rhythm.json"))
    parser.add_argument("--seed", type=int, default=2009)
    parser.add_argument("--af-series", type=int, default=20)
    parser.add_argument("--af-beats", type=int, default=1024)


def add_burden_arguments(parser: argparse.ArgumentParser) -> None:
    # No defaults here: evaluation.burden.Options holds them (options_from fills them in).
    parser.add_argument("--patients", type=int, help="simulated patients (default 500)")
    parser.add_argument("--hours", type=float, help="simulated hours (default 24)")
    parser.add_argument("--seed", type=int, help="default 2026")
    parser.add_argument("--event-share", type=float, help="share of patients with an event")
    parser.add_argument("--every", type=float, help="s between HR/SpO2")
    parser.add_argument("--upload-every", type=float)
    parser.add_argument("--tachogram", type=float, help="s per recording")
    parser.add_argument("--jobs", type=int, default=0, help="processes; 0 = one per core")
    parser.add_argument("--out", type=Path, default=Path("bench/results/burden.json"))


def rhythm(args: argparse.Namespace, settings: Settings) -> int:
    from evaluation import rhythm_validation
    from processors.rules import rules_from_settings

    return rhythm_validation.run(
        rules_from_settings(settings),
        af_series=args.af_series,
        af_beats=args.af_beats,
        seed=args.seed,
        out=args.out,
    )


def burden(args: argparse.Namespace, settings: Settings) -> int:
    """CPU-bound, in worker processes: called without an event loop."""
    from evaluation import burden as population_burden
    from processors.rules import rules_from_settings

    try:
        opts = population_burden.options_from(args)
    except ValueError as exc:
        print(f"vitals burden: {exc}", file=sys.stderr)
        return 2
    opts = dataclasses.replace(opts, tick_s=settings.silence_check_interval_s)
    return population_burden.run(rules_from_settings(settings), opts, args.out)

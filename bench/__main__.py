"""`python -m bench` (what `make bench` runs): the benchmark harness, from a source checkout.
It sits outside the installed packages, as aiokafka's benchmark/ does."""

from __future__ import annotations

import argparse
import sys

from bench import options
from bench.run import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    options.add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

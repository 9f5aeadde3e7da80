"""Progress of long work for a person at a terminal: items done, rate, time left.

The one mechanism of `vitals export`, `vitals burden`, `vitals validate rhythm`,
`make bench` and `make soak`. tqdm draws it: a small, long-kept library with no
dependencies of its own that computes the rate and the time left (smoothed) and redraws at
most a few times a second, rather than a hand-made bar. It is drawn on stderr, and only
when both stdout and stderr are terminals: a script, a pipe, a cron job or a log file gets
no control characters and nothing extra (tests/unit/test_progress.py checks both sides).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


def on_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def bar(what: str, total: float | None = None, unit: str = "items") -> tqdm:
    """A progress bar for `what` (`total` None: done and rate, no time left); `update(n)`
    as work is done, `close()` (or a `with` block) at the end. Off a terminal, inert."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=what,
        unit=f" {unit}",
        unit_scale=False,
        file=sys.stderr,
        disable=not on_terminal(),
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )

"""Profiles of the stages under benchmark load, from `py-spy record -f raw` (folded stacks:
one line per distinct stack, frames joined by ';', then the sample count).

Summarised as the share of samples in which a function appears (inclusive) and at the top
of the stack (self), by function and file with line numbers dropped: enough to say what
dominates and what to optimise next.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"^(?P<fn>.*?) \((?P<file>.*?)(:\d+)?\)$")


def frame_name(frame: str) -> str:
    """'f (sinks/timescale/writer.py:33)' -> 'f (sinks/timescale/writer.py)', with install
    paths cut to the package's own path."""
    match = _SITE.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['fn']} ({path})"


def summarise(folded: str) -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, inclusive counts, self counts) by function."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        # The first frame is py-spy's process/thread label: not a function.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    return total, inclusive, own


def top(folded: str, n: int = 15, *, by: str = "self") -> list[tuple[str, float]]:
    """The n functions with the largest share (percent of samples)."""
    total, inclusive, own = summarise(folded)
    if total == 0:
        return []
    counts = own if by == "self" else inclusive
    return [(name, count / total * 100) for name, count in counts.most_common(n)]


def compact(folded: str) -> str:
    """The same folded stacks with line numbers and install paths dropped and equal stacks
    merged: small enough to keep under bench/results/, still readable by flamegraph tools."""
    merged: Counter[str] = Counter()
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            merged[";".join(frame_name(f) for f in stack.split(";") if f)] += int(count_text)
    return "".join(f"{stack} {count}\n" for stack, count in merged.most_common())


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""

"""The statistics a benchmark reports: medians, spread across repetitions, percentiles, ratios.

Pure functions over plain numbers, so the figures in bench/results/ can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; no interpolation, so a
    reported p99 is a latency that was actually observed."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True, slots=True)
class Summary:
    """Repetitions of one figure: the median and how far the runs spread around it."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return median(self.runs)

    @property
    def spread_pct(self) -> float:
        """(max - min) / median in percent: the noise between repetitions."""
        mid = self.median
        if mid == 0:
            return 0.0
        return (max(self.runs) - min(self.runs)) / abs(mid) * 100


def ratio(project: float, peer: float) -> float:
    """project / peer; infinite when the peer measured zero (it did nothing)."""
    if peer == 0:
        return math.inf
    return project / peer


@dataclass(frozen=True, slots=True)
class Target:
    """What the issue asks of a figure: a ratio to the peer at least `value`, or the
    project's median below `value`."""

    kind: str  # "ratio_at_least" | "below"
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("ratio_at_least", "below"):
            raise ValueError(f"unknown target kind {self.kind!r}")

    def describe(self, unit: str) -> str:
        if self.kind == "ratio_at_least":
            return f"≥ {self.value:g}× peer" if self.value >= 1 else f"≥ {self.value:.0%} of peer"
        return f"< {self.value:g} {unit}"

    def met(self, project: float, peer_ratio: float | None) -> bool:
        if self.kind == "ratio_at_least":
            if peer_ratio is None:
                raise ValueError("a ratio target needs a peer")
            return peer_ratio >= self.value
        return project < self.value

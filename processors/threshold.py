"""Sustained threshold breach: a vital sign beyond a limit for long enough (event time).

Rule "spo2_low": SpO2 < 90 % sustained for >= 120 s opens an episode; it resolves once
SpO2 >= 92 % (hysteresis) for `clear_for_s`. Rule "hr_high": heart rate > 130 /min for
>= 300 s, resolving at <= 120 /min. The persistence, hysteresis and the handling of late
readings are the shared episode machine's (episodes.py); this module says what breaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.episodes import EpisodeMachine


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    rule: str
    metric: str
    above: bool  # True: breach when the value is above the threshold; False: below
    threshold: float
    clear: float  # the level the value must be back beyond before the episode resolves
    for_ms: int
    clear_for_ms: int
    severity: str
    suppress_ms: int = 0  # a repeat opening this soon after a resolution is not paged
    dip_ms: int = 0  # a pending run survives dips totalling less (episodes.py)

    def breaches(self, value: float) -> bool:
        return value > self.threshold if self.above else value < self.threshold

    def clears(self, value: float) -> bool:
        return value <= self.clear if self.above else value >= self.clear

    def worse(self, a: float, b: float) -> float:
        return max(a, b) if self.above else min(a, b)

    def describe(self) -> str:
        sign = ">" if self.above else "<"
        return f"{self.metric} {sign} {self.threshold:g} for >= {self.for_ms / 1000:g} s"


def sustained_breach(rule: ThresholdRule) -> EpisodeMachine:
    """The detector for one rule on one series."""
    return EpisodeMachine(rule, rule.suppress_ms, rule.dip_ms)

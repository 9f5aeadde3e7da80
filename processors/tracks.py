"""What the engine runs over one series' window: a track of detectors with one step.

Every detector kind (sustained thresholds, NEWS2, rhythm) is a track: an initial state, a
step for the window's recompute (windows.py) that appends what it emitted, and the
episode machines it drives (episodes.py), whose logs make recomputes and replays silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from processors.episodes import IDLE, Change, EpisodeMachine, EpisodeState, Phase
from processors.threshold import ThresholdRule, sustained_breach
from processors.windows import Sample


@dataclass(frozen=True, slots=True)
class Found:
    """A state change a track emitted: becomes a contract.Detection in the engine."""

    rule: str
    severity: str
    metric: str | None
    change: Change
    detail: str


class Track(Protocol):
    @property
    def initial(self) -> Any: ...
    @property
    def machines(self) -> tuple[EpisodeMachine, ...]: ...
    @property
    def span_ms(self) -> int: ...
    def step(self, state: Any, sample: Sample, prev_t: int | None, out: list[Found]) -> Any: ...
    def idle(self, state: Any) -> bool: ...


class ThresholdTrack:
    """The sustained-breach rules on one metric (threshold.py)."""

    def __init__(self, rules: tuple[ThresholdRule, ...]) -> None:
        self.rules = rules
        self.machines = tuple(sustained_breach(rule) for rule in rules)
        self.initial: tuple[EpisodeState, ...] = (IDLE,) * len(rules)
        self.span_ms = max((max(r.for_ms, r.clear_for_ms) for r in rules), default=0)

    def step(
        self, states: tuple[EpisodeState, ...], sample: Sample, prev_t: int | None, out: list[Found]
    ) -> tuple[EpisodeState, ...]:
        stepped = []
        for rule, machine, state in zip(self.rules, self.machines, states, strict=True):
            changes: list[Change] = []
            stepped.append(machine.step(state, sample, prev_t, changes))
            out.extend(
                Found(rule.rule, rule.severity, rule.metric, c, rule.describe()) for c in changes
            )
        return tuple(stepped)

    def idle(self, states: tuple[EpisodeState, ...]) -> bool:
        return all(s.phase is Phase.IDLE for s in states)

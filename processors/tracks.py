"""What the engine runs over one series' window: a track of detectors with one step.

Every detector kind (a metric's own rules, NEWS2, rhythm) is a track: an initial state, a
step for the window's recompute (windows.py) that appends what it emitted, and the
episode machines it drives (episodes.py), whose logs make recomputes and replays silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from processors import baseline, faults
from processors.baseline import Baseline, BaselineRule
from processors.episodes import IDLE, Change, EpisodeMachine, EpisodeState, Phase
from processors.faults import FaultState, FlatLineRule, JumpRule
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


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
class MetricState:
    thresholds: tuple[EpisodeState, ...]
    faults: FaultState = faults.CLEAN
    flat: EpisodeState = IDLE
    jump: EpisodeState = IDLE
    baseline: Baseline = baseline.EMPTY
    trend: EpisodeState = IDLE


class MetricTrack:
    """The rules on one metric of a patient: sustained thresholds (threshold.py), sensor
    faults (faults.py) and the personal baseline (baseline.py).

    Faults are checked first: a reading they flag (a suspect jump, a flat line that holds)
    is passed over by the thresholds and the baseline, so an artefact neither pages as a
    clinical breach nor moves the baseline.
    """

    def __init__(
        self,
        thresholds: tuple[ThresholdRule, ...],
        flat: FlatLineRule | None = None,
        jump: JumpRule | None = None,
        trend: BaselineRule | None = None,
    ) -> None:
        self.rules = thresholds
        self.flat, self.jump, self.trend = flat, jump, trend
        self.threshold_machines = tuple(sustained_breach(rule) for rule in thresholds)
        self._thresholds = tuple(zip(thresholds, self.threshold_machines, strict=True))
        # `is not None`, not `flat and ...`: a machine or None, never the rule itself.
        self.flat_machine = (
            EpisodeMachine(flat.condition, flat.suppress_ms) if flat is not None else None
        )
        self.jump_machine = (
            EpisodeMachine(jump.condition, jump.suppress_ms, jump.dip_ms)
            if jump is not None
            else None
        )
        self.trend_machine = (
            EpisodeMachine(trend.condition, trend.suppress_ms, trend.dip_ms)
            if trend is not None
            else None
        )
        self.machines = tuple(
            m
            for m in (
                *self.threshold_machines,
                self.flat_machine,
                self.jump_machine,
                self.trend_machine,
            )
            if m is not None
        )
        self.initial = MetricState((IDLE,) * len(thresholds))
        # The baseline and a flat run (hours, minutes) live in the checkpointed state, not
        # in held readings: they add nothing to what the window holds.
        spans = [max(r.for_ms + r.dip_ms, r.clear_for_ms) for r in thresholds]
        spans += [max(jump.for_ms + jump.dip_ms, jump.clear_for_ms, jump.hold_ms)] if jump else []
        self.span_ms = max(spans, default=0)

    def step(
        self, state: MetricState, sample: Sample, prev_t: int | None, out: list[Found]
    ) -> MetricState:
        t, device_id = sample.t, sample.device_id
        fault_state, verdict = state.faults, faults.CLEAR
        if self.flat or self.jump:
            fault_state, verdict = faults.check(state.faults, sample, self.flat, self.jump)
        flat_ep, jump_ep = state.flat, state.jump
        if self.flat and self.flat_machine:
            flat_ep = self._flag(self.flat_machine, flat_ep, sample, verdict.flat, prev_t, out)
        if self.jump and self.jump_machine:
            jump_ep = self._flag(self.jump_machine, jump_ep, sample, verdict.suspect, prev_t, out)
        trusted = not (verdict.suspect or verdict.flat)
        stepped = []
        for (rule, machine), episode in zip(self._thresholds, state.thresholds, strict=True):
            if not trusted:
                stepped.append(machine.pass_over(episode, sample.t, prev_t))
                continue
            changes: list[Change] = []
            stepped.append(machine.step(episode, t, sample.v, device_id, prev_t, changes))
            if changes:  # rare: most readings change no episode
                out.extend(
                    Found(rule.rule, rule.severity, rule.metric, c, rule.describe())
                    for c in changes
                )
        learned, trend_ep = state.baseline, state.trend
        if self.trend and self.trend_machine:
            if trusted:
                learned, deviation = baseline.learn(learned, t, sample.v, self.trend)
                changes = []
                trend_ep = self.trend_machine.step(
                    trend_ep, t, deviation, device_id, prev_t, changes
                )
                if changes:
                    detail = self.trend.describe(learned)
                    out.extend(
                        Found(self.trend.rule, baseline.SEVERITY, self.trend.metric, c, detail)
                        for c in changes
                    )
            else:
                trend_ep = self.trend_machine.pass_over(trend_ep, t, prev_t)
        return MetricState(tuple(stepped), fault_state, flat_ep, jump_ep, learned, trend_ep)

    def _flag(
        self,
        machine: EpisodeMachine,
        episode: EpisodeState,
        sample: Sample,
        flagged: bool,
        prev_t: int | None,
        out: list[Found],
    ) -> EpisodeState:
        """A fault episode, run on the flagged readings' values (faults.Flagged)."""
        changes: list[Change] = []
        value = sample.v if flagged else math.nan
        episode = machine.step(episode, sample.t, value, sample.device_id, prev_t, changes)
        if changes:
            rule = self.flat if machine is self.flat_machine else self.jump
            assert rule is not None
            out.extend(
                Found(rule.rule, faults.SEVERITY, rule.metric, c, rule.describe()) for c in changes
            )
        return episode

    def idle(self, state: MetricState) -> bool:
        episodes = (*state.thresholds, state.flat, state.jump, state.trend)
        return all(s.phase is Phase.IDLE for s in episodes)

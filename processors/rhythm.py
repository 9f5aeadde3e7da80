"""Rhythm irregularity (atrial fibrillation screening) from `rr_interval` readings.

Method: Dash et al. 2009 (Ann Biomed Eng 37:1701). Consecutive RR intervals are cut into
non-overlapping windows of 128 beats; a window is irregular when all three hold:

- normalised RMSSD (RMSSD / mean RR) > 0.1, after removing the 8 longest and 8 shortest
  intervals (ectopic beats and their compensatory pauses, missed or extra detections);
- turning-point ratio within [0.54, 0.77]: a random sequence has 2/3 turning points,
  while bigeminy (every beat a turning point) or a slow trend (few) is not random;
- Shannon entropy of the trimmed intervals over 16 equal bins > 0.7: AF spreads over the
  range, ectopy clusters in two or three bins (the classic false positive).

Artefacts: an interval outside [min_rr_ms, max_rr_ms] is left out and counted; a window
with more than `max_artefact_fraction` of them is unreadable (neither irregular nor
regular). A gap of more than `max_gap_s` between beats (a tachogram ends, the strap
slipped) starts a new window: beats in one window are consecutive.

Persistence (Apple Heart Study: 5 of 6 tachograms): the episode machine is fed the number
of irregular windows among the last `windows_of`; `rhythm_irregular` opens when it reaches
`windows_needed` and resolves when the last `windows_of` windows were all read as regular.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from processors.episodes import IDLE, EpisodeMachine, EpisodeState, Phase
from processors.windows import Sample

RULE = "rhythm_irregular"
ENTROPY_BINS = 16


@dataclass(frozen=True, slots=True)
class RhythmRule:
    window_beats: int
    trim_beats: int
    rmssd_min: float
    tpr_min: float
    tpr_max: float
    entropy_min: float
    min_rr_ms: float
    max_rr_ms: float
    max_artefact_fraction: float
    max_gap_ms: int
    windows_needed: int
    windows_of: int
    severity: str
    suppress_ms: int = 0

    @classmethod
    def from_fields(cls, v: dict[str, Any]) -> RhythmRule:
        """From the rules file's checked fields; ValueError("field: why") if they clash."""
        from vitals.contract import SEVERITIES

        if v["window_beats"] < 16:
            raise ValueError("window_beats: must be at least 16")
        if not 0 <= 2 * v["trim_beats"] < v["window_beats"] - 8:
            raise ValueError("trim_beats: must leave at least 8 beats of the window")
        if not 0 <= v["tpr_min"] < v["tpr_max"] <= 1:
            raise ValueError("tpr_max: needs 0 <= tpr_min < tpr_max <= 1")
        if not 0 < v["min_rr_ms"] < v["max_rr_ms"]:
            raise ValueError("max_rr_ms: needs 0 < min_rr_ms < max_rr_ms")
        if not 0 <= v["max_artefact_fraction"] < 1:
            raise ValueError("max_artefact_fraction: must be in [0, 1)")
        if not 1 <= v["windows_needed"] <= v["windows_of"]:
            raise ValueError("windows_needed: needs 1 <= windows_needed <= windows_of")
        if v["severity"] not in SEVERITIES:
            raise ValueError(f"severity: unknown severity {v['severity']!r}")
        return cls(
            window_beats=v["window_beats"],
            trim_beats=v["trim_beats"],
            rmssd_min=v["rmssd_min"],
            tpr_min=v["tpr_min"],
            tpr_max=v["tpr_max"],
            entropy_min=v["entropy_min"],
            min_rr_ms=v["min_rr_ms"],
            max_rr_ms=v["max_rr_ms"],
            max_artefact_fraction=v["max_artefact_fraction"],
            max_gap_ms=round(v["max_gap_s"] * 1000),
            windows_needed=v["windows_needed"],
            windows_of=v["windows_of"],
            severity=v["severity"],
        )

    @property
    def span_ms(self) -> int:
        """Event time the persistence rule looks back over, at the slowest plausible beat."""
        return round(self.windows_of * self.window_beats * self.max_rr_ms)


@dataclass(frozen=True, slots=True)
class Features:
    rmssd: float  # normalised
    tpr: float
    entropy: float


def features(rr: Sequence[float], trim: int) -> Features:
    """Dash et al.'s three statistics over one window of consecutive intervals."""
    n = len(rr)
    turning = sum(
        1
        for i in range(1, n - 1)
        if (rr[i - 1] < rr[i] > rr[i + 1]) or (rr[i - 1] > rr[i] < rr[i + 1])
    )
    tpr = turning / (n - 2)
    # Trim the extremes by rank but keep the order, so successive differences stay
    # successive (an ectopic beat and its pause are removed as a pair, mostly).
    ranked = sorted(range(n), key=lambda i: rr[i])
    dropped = set(ranked[:trim]) | set(ranked[n - trim :]) if trim else set()
    kept = [rr[i] for i in range(n) if i not in dropped]
    mean = sum(kept) / len(kept)
    diffs = [b - a for a, b in zip(kept, kept[1:], strict=False)]
    rmssd = math.sqrt(sum(d * d for d in diffs) / len(diffs)) / mean
    low, high = min(kept), max(kept)
    if high == low:
        entropy = 0.0
    else:
        width = (high - low) / ENTROPY_BINS
        counts = [0] * ENTROPY_BINS
        for value in kept:
            counts[min(int((value - low) / width), ENTROPY_BINS - 1)] += 1
        entropy = -sum(c / len(kept) * math.log(c / len(kept)) for c in counts if c)
        entropy /= math.log(ENTROPY_BINS)
    return Features(rmssd, tpr, entropy)


def irregular(f: Features, rule: RhythmRule) -> bool:
    return (
        f.rmssd > rule.rmssd_min
        and rule.tpr_min <= f.tpr <= rule.tpr_max
        and (f.entropy > rule.entropy_min)
    )


def judge(rr: Sequence[float], artefacts: int, rule: RhythmRule) -> bool | None:
    """A window's verdict: irregular (True), regular (False) or unreadable (None)."""
    if artefacts > rule.max_artefact_fraction * rule.window_beats:
        return None
    return irregular(features(rr, rule.trim_beats), rule)


# The current window's beats, oldest first, as float64 in an array: a checkpoint holds
# 8 bytes a beat (a tuple of floats held 32). Each interval makes a new one (states are
# never changed), a copy of at most `window_beats` values.
Beats = array | None  # type: ignore[type-arg]


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True)  # not hashable: its beats are an array
class RhythmState:
    beats: Beats = None
    count: int = 0
    artefacts: int = 0
    last_t: int | None = None
    verdicts: tuple[bool | None, ...] = ()  # the last `windows_of` windows, oldest first
    episode: EpisodeState = IDLE
    judged: int = 0  # windows completed so far

    @property
    def irregular_count(self) -> int:
        return sum(1 for v in self.verdicts if v)


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
class Persistence:
    """The episode rule on the count of irregular windows (a Condition of episodes.py)."""

    rule: str
    needed: int
    for_ms: int = 0  # persistence is counted in windows, not time
    clear_for_ms: int = 0

    def breaches(self, value: float) -> bool:
        return value >= self.needed

    def clears(self, value: float) -> bool:
        return value == 0

    def worse(self, a: float, b: float) -> float:
        return max(a, b)


class RhythmTrack:
    """The rhythm detector of one patient: a step for the shared window (windows.py)."""

    def __init__(self, rule: RhythmRule) -> None:
        self.rule = rule
        self.condition = Persistence(RULE, rule.windows_needed)
        self.machines = (EpisodeMachine(self.condition, rule.suppress_ms),)
        self.initial = RhythmState()
        self.span_ms = rule.span_ms

    def advance(self, state: RhythmState, sample: Sample) -> RhythmState:
        """The beat buffer and window verdicts after one interval (no episode logic)."""
        rule = self.rule
        beats, count, artefacts = state.beats, state.count, state.artefacts
        if state.last_t is not None and sample.t - state.last_t > rule.max_gap_ms:
            beats, count, artefacts = None, 0, 0  # not consecutive: start a new window
        verdicts, judged = state.verdicts, state.judged
        if rule.min_rr_ms <= sample.v <= rule.max_rr_ms:
            beats = array("d", beats) if beats is not None else array("d")
            beats.append(sample.v)
            count += 1
        else:
            artefacts += 1
        if count + artefacts >= rule.window_beats:
            rr = list(beats) if beats is not None else []
            verdict = judge(rr, artefacts, rule) if len(rr) >= 16 else None
            verdicts = (*verdicts, verdict)[-rule.windows_of :]
            beats, count, artefacts, judged = None, 0, 0, judged + 1
        return RhythmState(beats, count, artefacts, sample.t, verdicts, state.episode, judged)

    def step(
        self, state: RhythmState, sample: Sample, prev_t: int | None, out: list[Any]
    ) -> RhythmState:
        from processors.tracks import Found

        nxt = self.advance(state, sample)
        value = float(nxt.irregular_count)
        if value == 0 and (None in nxt.verdicts or len(nxt.verdicts) < self.rule.windows_of):
            # Unreadable or too few windows prove nothing: an episode stays open.
            value = math.nan
        changes: list[Any] = []
        episode = self.machines[0].step(
            state.episode, sample.t, value, sample.device_id, prev_t, changes
        )
        for change in changes:
            detail = (
                f"{change.value:g} of the last {self.rule.windows_of} windows of "
                f"{self.rule.window_beats} beats irregular (Dash 2009)"
                if change.state == "opened"
                else f"no irregular window among the last {self.rule.windows_of}"
            )
            out.append(Found(RULE, self.rule.severity, "rr_interval", change, detail))
        return replace(nxt, episode=episode)

    def idle(self, state: RhythmState) -> bool:
        return state.episode.phase is Phase.IDLE and state.irregular_count == 0

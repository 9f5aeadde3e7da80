"""Sensor faults on one metric: a flat line and impossible jumps (a device problem).

Flat line (`hr_flat`, `spo2_flat`): the metric reads exactly the same value for
`for_ms` over at least `min_readings` readings with no gap over `max_gap_ms` between
them. Real physiology is never that still (heart rate varies beat to beat); a frozen or
stuck sensor is. The episode resolves once the value has moved for `clear_for_ms`.

Impossible jump (`hr_jump`, `spo2_jump`): a reading at least `max_change` away from the
previous one that came at most `within_ms` before it, and from the trusted level: the
median of the last `level_readings` trusted readings (a motion artefact, a probe slipping).
Such a reading is *suspect*, and so is every reading after it that stays `max_change` away
from that level, for up to `hold_ms`; after that the new level is believed (a real change
has the time it takes). The median, not the previous reading, is what a jump is judged
against so that the return from a brief excursion (a dip just under `max_change`, then
back up in one step) is no jump: it goes back to where the signal was. A run of suspect
readings lasting `for_ms` opens the episode, and the run bridges clean readings for less
than the rule's `dip_ms` (episodes.py), so repeated spikes are a fault too; a single
artefact of a few seconds is not.

Suspect readings, and the readings of a flat line once it holds, do not feed the metric's
threshold rules nor its personal baseline (tracks.MetricTrack): a probe falling off must
not page as a desaturation. Both fault episodes are LOW severity and say they are about the
device, not the patient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processors.windows import Sample

SEVERITY = "low"
DEVICE_NOTE = "sensor fault (a device problem, not a clinical finding)"


@dataclass(frozen=True, slots=True)
class Flagged:
    """The episode rule of a fault (a Condition of episodes.py), fed the reading's value
    when the fault flags it and NaN otherwise: the episode's value is the last flagged
    reading (the stuck value, the suspect level)."""

    rule: str
    for_ms: int
    clear_for_ms: int

    def breaches(self, value: float) -> bool:
        return not math.isnan(value)

    def clears(self, value: float) -> bool:
        return math.isnan(value)

    def worse(self, a: float, b: float) -> float:
        return b


@dataclass(frozen=True, slots=True)
class FlatLineRule:
    rule: str
    metric: str
    for_ms: int
    min_readings: int
    max_gap_ms: int
    clear_for_ms: int
    suppress_ms: int = 0

    @classmethod
    def from_fields(cls, name: str, v: dict[str, Any]) -> FlatLineRule:
        """From the rules file's checked fields; ValueError("field: why") if they clash."""
        if v["for_s"] <= 0:
            raise ValueError("for_s: must be positive")
        if v["min_readings"] < 2:
            raise ValueError("min_readings: must be at least 2")
        return cls(
            rule=name,
            metric=v["metric"],
            for_ms=round(v["for_s"] * 1000),
            min_readings=v["min_readings"],
            max_gap_ms=round(v["max_gap_s"] * 1000),
            clear_for_ms=round(v["clear_for_s"] * 1000),
        )

    @property
    def condition(self) -> Flagged:
        """The episode rule on flagged readings; the persistence is in the run itself."""
        return Flagged(self.rule, 0, self.clear_for_ms)

    def describe(self) -> str:
        return (
            f"{DEVICE_NOTE}: {self.metric} reads exactly the same value for >= "
            f"{self.for_ms / 1000:g} s (>= {self.min_readings} readings); check the device"
        )


@dataclass(frozen=True, slots=True)
class JumpRule:
    rule: str
    metric: str
    max_change: float
    within_ms: int
    level_readings: int
    hold_ms: int
    for_ms: int
    clear_for_ms: int
    suppress_ms: int = 0
    dip_ms: int = 0

    @classmethod
    def from_fields(cls, name: str, v: dict[str, Any]) -> JumpRule:
        """From the rules file's checked fields; ValueError("field: why") if they clash."""
        if v["max_change"] <= 0:
            raise ValueError("max_change: must be positive")
        if v["within_s"] <= 0:
            raise ValueError("within_s: must be positive")
        if v["level_readings"] < 1:
            raise ValueError("level_readings: must be at least 1")
        if v["for_s"] >= v["hold_s"]:
            raise ValueError("for_s: must be below hold_s (a longer run is believed)")
        return cls(
            rule=name,
            metric=v["metric"],
            max_change=v["max_change"],
            within_ms=round(v["within_s"] * 1000),
            level_readings=v["level_readings"],
            hold_ms=round(v["hold_s"] * 1000),
            for_ms=round(v["for_s"] * 1000),
            clear_for_ms=round(v["clear_for_s"] * 1000),
        )

    @property
    def condition(self) -> Flagged:
        return Flagged(self.rule, self.for_ms, self.clear_for_ms)

    def describe(self) -> str:
        return (
            f"{DEVICE_NOTE}: {self.metric} changed by >= {self.max_change:g} within "
            f"{self.within_ms / 1000:g} s, faster than physiology allows; such readings are "
            f"kept out of the clinical rules for up to {self.hold_ms / 1000:g} s"
        )


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
class FaultState:
    """What the fault checks remember after a reading (part of the window's checkpoint)."""

    prev_t: int | None = None
    prev_v: float = 0.0
    trusted: tuple[float, ...] = ()  # the last level_readings readings not suspect
    suspect_since: int | None = None  # the jump that started the current suspect run
    run_start: int = 0  # the current run of identical values (prev_v's)
    run_count: int = 0


CLEAN = FaultState()


@dataclass(frozen=True, slots=True)
class Verdict:
    suspect: bool  # part of an impossible jump
    flat: bool  # the flat line holds at this reading


CLEAR = Verdict(suspect=False, flat=False)
# The four verdicts, made once: check() runs for every reading.
_VERDICTS = {(s, f): Verdict(s, f) for s in (False, True) for f in (False, True)}


def _median(values: tuple[float, ...]) -> float:
    # statistics.median's checks and conversions cost more than sorting nine floats.
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def check(
    state: FaultState, sample: Sample, flat: FlatLineRule | None, jump: JumpRule | None
) -> tuple[FaultState, Verdict]:
    """The fault state after one reading, and what it says about that reading."""
    t, v = sample.t, sample.v
    gap = None if state.prev_t is None else t - state.prev_t
    suspect_since: int | None = None
    trusted = state.trusted
    if jump is not None:
        level = _median(trusted) if trusted else None
        if level is not None and abs(v - level) >= jump.max_change:
            if state.suspect_since is not None and t - state.suspect_since < jump.hold_ms:
                suspect_since = state.suspect_since  # still away from the trusted level
            elif gap is not None and gap <= jump.within_ms:
                if abs(v - state.prev_v) >= jump.max_change:
                    suspect_since = t  # jumped away from it
        if suspect_since is None:
            trusted = (*trusted, v)[-jump.level_readings :]
    suspect = suspect_since is not None
    # Exact equality is the point: a stuck sensor repeats its last value bit for bit.
    same = flat is not None and gap is not None and gap <= flat.max_gap_ms and v == state.prev_v
    run_start, run_count = (state.run_start, state.run_count + 1) if same else (t, 1)
    is_flat = flat is not None and run_count >= flat.min_readings and t - run_start >= flat.for_ms
    after = FaultState(t, v, trusted, suspect_since, run_start, run_count)
    return after, _VERDICTS[suspect, is_flat]

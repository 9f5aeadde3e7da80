"""Personal baseline of a slow vital sign, and sustained deviation from it (a trend).

Per patient and metric (`hr_baseline`, `resp_baseline`, `spo2_baseline`):

- the *baseline* is an exponentially weighted moving average of the readings with time
  constant `baseline_tau_ms` (hours), its *spread* an exponentially weighted mean absolute
  deviation from it; 1.2533 x that mean absolute deviation estimates the standard deviation
  of normal data, floored at `min_sd`. Weights follow the time between readings
  (1 - exp(-dt / tau)), so irregular sampling needs no resampling;
- the *level* is a faster EWMA (`level_tau_ms`, minutes): what the deviation is judged on,
  so that noise and a single artefact do not break a persistence run (an EWMA control
  chart, CLINICAL.md);
- robustness: each reading moves the baseline and the spread by at most `deviation_sd`
  standard deviations (Huber clipping), and while the level or the reading itself deviates
  by more than that the baseline learns at `deviating_weight` of its rate, so it does not
  chase the very deviation it watches (nor lean towards single outliers);
- warm-up: nothing is judged before `warmup_ms` of data and `min_readings` readings;
  until then the baseline is the running mean (no reading weighs more than another).

The deviation in standard deviations, signed so that the watched direction is positive,
drives the shared episode machine: above `deviation_sd` for `for_ms` opens a LOW severity
trend episode, back at or below `clear_sd` for `clear_for_ms` resolves it. The episode's
value is that deviation (the largest so far, in standard deviations); the detail gives the
level and the baseline in the metric's unit. All of it is
state carried from reading to reading (the window's checkpoints), so a recompute after a
late reading and a replay give the same baseline as ordered input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processors.threshold import ThresholdRule

SEVERITY = "low"
SD_PER_MEAN_ABS_DEV = math.sqrt(math.pi / 2)  # 1.2533: normal data, sigma / E|x - mu|


@dataclass(frozen=True, slots=True)
class BaselineRule:
    rule: str
    metric: str
    above: bool  # True: a rise from the baseline is watched; False: a fall
    deviation_sd: float
    clear_sd: float
    baseline_tau_ms: int
    level_tau_ms: int
    warmup_ms: int
    min_readings: int
    min_sd: float
    deviating_weight: float
    for_ms: int
    clear_for_ms: int
    suppress_ms: int = 0
    dip_ms: int = 0  # a pending run survives dips totalling less (episodes.py)

    @classmethod
    def from_fields(cls, name: str, v: dict[str, Any]) -> BaselineRule:
        """From the rules file's checked fields; ValueError("field: why") if they clash."""
        if v["direction"] not in ("above", "below"):
            raise ValueError(f"direction: must be 'above' or 'below' (got {v['direction']!r})")
        if v["deviation_sd"] <= 0:
            raise ValueError("deviation_sd: must be positive")
        if not 0 <= v["clear_sd"] < v["deviation_sd"]:
            raise ValueError("clear_sd: must be in [0, deviation_sd) (hysteresis)")
        if not 0 < v["level_tau_s"] < v["baseline_tau_s"]:
            raise ValueError("level_tau_s: must be positive and below baseline_tau_s")
        if v["min_sd"] <= 0:
            raise ValueError("min_sd: must be positive")
        if not 0 <= v["deviating_weight"] < 1:
            raise ValueError("deviating_weight: must be in [0, 1)")
        if v["min_readings"] < 2:
            raise ValueError("min_readings: must be at least 2")
        return cls(
            rule=name,
            metric=v["metric"],
            above=v["direction"] == "above",
            deviation_sd=v["deviation_sd"],
            clear_sd=v["clear_sd"],
            baseline_tau_ms=round(v["baseline_tau_s"] * 1000),
            level_tau_ms=round(v["level_tau_s"] * 1000),
            warmup_ms=round(v["warmup_s"] * 1000),
            min_readings=v["min_readings"],
            min_sd=v["min_sd"],
            deviating_weight=v["deviating_weight"],
            for_ms=round(v["for_s"] * 1000),
            clear_for_ms=round(v["clear_for_s"] * 1000),
        )

    @property
    def condition(self) -> ThresholdRule:
        """The episode rule on the signed deviation (standard deviations)."""
        return ThresholdRule(
            self.rule,
            self.metric,
            True,
            self.deviation_sd,
            self.clear_sd,
            self.for_ms,
            self.clear_for_ms,
            SEVERITY,
        )

    def describe(self, state: Baseline) -> str:
        word = "above" if self.above else "below"
        return (
            f"trend: {self.metric} level {state.level:.1f} is {word} the patient's own "
            f"baseline {state.baseline:.1f} (sd {state.sd(self):.1f}) by > "
            f"{self.deviation_sd:g} sd for >= {self.for_ms / 1000:g} s"
        )


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
class Baseline:
    """The baseline after a reading (part of the window's checkpoint)."""

    baseline: float = 0.0
    spread: float = 0.0  # EW mean absolute deviation from the baseline
    level: float = 0.0
    count: int = 0
    since: int = 0
    last_t: int = 0

    def sd(self, rule: BaselineRule) -> float:
        return max(rule.min_sd, SD_PER_MEAN_ABS_DEV * self.spread)


EMPTY = Baseline()


def learn(state: Baseline, t: int, x: float, rule: BaselineRule) -> tuple[Baseline, float]:
    """The baseline after reading `x` at `t`, and the deviation of the level then (in sd,
    positive in the watched direction; NaN while warming up)."""
    if state.count == 0:
        return Baseline(x, 0.0, x, 1, t, t), math.nan
    dt = max(0, t - state.last_t)
    level = state.level + (1 - math.exp(-dt / rule.level_tau_ms)) * (x - state.level)
    sd = state.sd(rule)
    warm = state.count + 1 >= rule.min_readings and t - state.since >= rule.warmup_ms
    deviation = (level - state.baseline) / sd
    residual = x - state.baseline
    cap = rule.deviation_sd * sd
    # The reading or the level beyond k sd: learn slowly, not to chase what is watched.
    deviating = warm and (abs(deviation) > rule.deviation_sd or abs(residual) > cap)
    rate = 1 - math.exp(-dt / rule.baseline_tau_ms)
    if not warm:  # the running mean until then: the first readings weigh no more than later
        rate = max(rate, 1 / (state.count + 1))
    elif deviating:
        rate *= rule.deviating_weight
    clipped = max(-cap, min(cap, residual)) if warm else residual
    baseline = state.baseline + rate * clipped
    spread = state.spread + rate * (min(abs(residual), cap if warm else math.inf) - state.spread)
    after = Baseline(baseline, spread, level, state.count + 1, state.since, t)
    if not warm:
        return after, math.nan
    return after, deviation if rule.above else -deviation

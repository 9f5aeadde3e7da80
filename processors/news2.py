"""NEWS2 (Royal College of Physicians, 2017), per patient, recomputed as readings arrive.

The score at a reading's event time uses the latest valid value of each parameter within
`staleness_ms` of it. Values are first rounded to the chart's resolution (whole numbers;
0.1 °C) so that the gaps between the table's rows (20 and 21 /min) cannot be fallen into.
A score from fewer than all seven parameters is *partial* and says which it used and how
old each was. Wearables rarely report consciousness or oxygen: a carer or clinician can
send them as the readings `consciousness` (ACVPU code, 0 = Alert, 1 = new Confusion,
2 = Voice, 3 = Pain, 4 = Unresponsive) and `supplemental_o2` (0 = air, 1 = oxygen).

Two episode rules run on the score with the shared episode machine (episodes.py):
`news2_medium` opens at an aggregate >= 5 or a single parameter scoring 3 (the "red
score", which RCP asks to treat like medium), `news2_high` at >= 7. Severity escalates
upwards only: a patient going from medium to high gets a `news2_high` episode opened
inside the open `news2_medium` one; a fall back resolves the high episode first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from processors.episodes import IDLE, EpisodeMachine, EpisodeState, Phase
from processors.windows import Sample

# The parameters, in the order NEWS2 charts them; the reading metric that carries each.
PARAMETERS = (
    "resp_rate",
    "spo2",
    "supplemental_o2",
    "systolic_bp",
    "heart_rate",
    "consciousness",
    "body_temp",
)
INDEX = {name: i for i, name in enumerate(PARAMETERS)}
MEDIUM_SCORE, HIGH_SCORE = 5, 7
# A red score counts as this much for the medium rule: it opens a medium episode.
RED_AS = float(MEDIUM_SCORE)


def _half_up(value: float, places: int = 0) -> float:
    scale = 10**places
    return math.floor(value * scale + 0.5) / scale


def _by_upper_bounds(value: float, bounds: tuple[tuple[float, int], ...], above: int) -> int:
    for upper, points in bounds:
        if value <= upper:
            return points
    return above


def resp_rate_points(v: float) -> int:
    return _by_upper_bounds(_half_up(v), ((8, 3), (11, 1), (20, 0), (24, 2)), 3)


def spo2_points(v: float, scale: int, on_oxygen: bool) -> int:
    v = _half_up(v)
    if scale == 1:
        return _by_upper_bounds(v, ((91, 3), (93, 2), (95, 1)), 0)
    if v <= 92 or not on_oxygen:  # scale 2: 88-92 %, or >= 93 % on air, score 0
        return _by_upper_bounds(v, ((83, 3), (85, 2), (87, 1)), 0)
    return _by_upper_bounds(v, ((94, 1), (96, 2)), 3)


def oxygen_points(v: float) -> int:
    return 2 if v == 1 else 0


def systolic_points(v: float) -> int:
    return _by_upper_bounds(_half_up(v), ((90, 3), (100, 2), (110, 1), (219, 0)), 3)


def pulse_points(v: float) -> int:
    return _by_upper_bounds(_half_up(v), ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2)), 3)


def consciousness_points(v: float) -> int:
    return 0 if v == 0 else 3


def temperature_points(v: float) -> int:
    return _by_upper_bounds(_half_up(v, 1), ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1)), 2)


def valid(parameter: str, v: float) -> bool:
    """Coded parameters must carry one of their codes; others passed the gateway's range."""
    if parameter == "consciousness":
        return v in (0, 1, 2, 3, 4)
    if parameter == "supplemental_o2":
        return v in (0, 1)
    return math.isfinite(v)


@dataclass(frozen=True, slots=True)
class Score:
    total: int
    red: bool  # some single parameter scored 3
    points: dict[str, int]
    ages_ms: dict[str, int]
    scale: int

    @property
    def partial(self) -> bool:
        return len(self.points) < len(PARAMETERS)

    @property
    def band(self) -> str:
        if self.total >= HIGH_SCORE:
            return "high"
        if self.total >= MEDIUM_SCORE:
            return "medium"
        if self.red:
            return "low-medium"
        return "low" if self.total > 0 else "zero"

    def detail(self) -> str:
        """Compact JSON for Detection.detail: what the score used and how old each was."""
        return orjson.dumps(
            {
                "news2": self.total,
                "band": self.band,
                "red": self.red,
                "partial": self.partial,
                "scale": self.scale,
                "used": {p: [self.points[p], self.ages_ms[p] // 1000] for p in self.points},
                "missing": [p for p in PARAMETERS if p not in self.points],
            }
        ).decode()


Latest = tuple[tuple[int, float] | None, ...]  # per PARAMETERS: (event time, value)


def score(latest: Latest, at: int, scale: int, staleness_ms: int) -> Score:
    """NEWS2 at event time `at` from each parameter's latest value within the staleness."""
    fresh = {
        name: entry
        for name, entry in zip(PARAMETERS, latest, strict=True)
        if entry is not None and at - entry[0] <= staleness_ms
    }
    oxygen = fresh.get("supplemental_o2")
    on_oxygen = oxygen is not None and oxygen[1] == 1
    rules: dict[str, Callable[[float], int]] = {
        "resp_rate": resp_rate_points,
        "spo2": lambda v: spo2_points(v, scale, on_oxygen),
        "supplemental_o2": oxygen_points,
        "systolic_bp": systolic_points,
        "heart_rate": pulse_points,
        "consciousness": consciousness_points,
        "body_temp": temperature_points,
    }
    points = {name: rules[name](v) for name, (_, v) in fresh.items()}
    ages = {name: at - t for name, (t, _) in fresh.items()}
    return Score(sum(points.values()), 3 in points.values(), points, ages, scale)


@dataclass(frozen=True, slots=True)
class News2Rule:
    spo2_scale: int
    staleness_ms: int
    min_parameters: int
    for_ms: int
    clear_for_ms: int
    medium_clear_score: float
    high_clear_score: float

    @classmethod
    def from_fields(cls, v: dict[str, Any]) -> News2Rule:
        """From the rules file's checked fields; ValueError("field: why") if they clash."""
        if v["spo2_scale"] not in (1, 2):
            raise ValueError(f"spo2_scale: must be 1 or 2 (got {v['spo2_scale']})")
        if not 1 <= v["min_parameters"] <= len(PARAMETERS):
            raise ValueError(f"min_parameters: must be 1 to {len(PARAMETERS)}")
        if v["medium_clear_score"] >= MEDIUM_SCORE:
            raise ValueError(f"medium_clear_score: must be below {MEDIUM_SCORE} (hysteresis)")
        if v["high_clear_score"] >= HIGH_SCORE:
            raise ValueError(f"high_clear_score: must be below {HIGH_SCORE} (hysteresis)")
        if v["staleness_s"] <= 0:
            raise ValueError("staleness_s: must be positive")
        return cls(
            spo2_scale=v["spo2_scale"],
            staleness_ms=round(v["staleness_s"] * 1000),
            min_parameters=v["min_parameters"],
            for_ms=round(v["for_s"] * 1000),
            clear_for_ms=round(v["clear_for_s"] * 1000),
            medium_clear_score=v["medium_clear_score"],
            high_clear_score=v["high_clear_score"],
        )

    @property
    def span_ms(self) -> int:
        """Event time back a restart must replay to rebuild the score and its episodes."""
        return self.staleness_ms + max(self.for_ms, self.clear_for_ms)


@dataclass(frozen=True, slots=True)
class Band:
    """An episode rule on the NEWS2 score (a Condition of episodes.py)."""

    rule: str
    severity: str
    open_at: float
    clear_at: float
    for_ms: int
    clear_for_ms: int

    def breaches(self, value: float) -> bool:
        return value >= self.open_at  # NaN (no score) neither breaches nor clears

    def clears(self, value: float) -> bool:
        return value <= self.clear_at

    def worse(self, a: float, b: float) -> float:
        return max(a, b)

    def describe(self) -> str:
        return f"NEWS2 >= {self.open_at:g}"


@dataclass(frozen=True, slots=True)
class News2State:
    latest: Latest = (None,) * len(PARAMETERS)
    medium: EpisodeState = IDLE
    high: EpisodeState = IDLE


class News2Track:
    """The NEWS2 detector of one patient: a step for the shared window (windows.py)."""

    def __init__(self, rule: News2Rule) -> None:
        self.rule = rule
        self.bands = (
            Band("news2_medium", "medium", MEDIUM_SCORE, rule.medium_clear_score,
                 rule.for_ms, rule.clear_for_ms),
            Band("news2_high", "high", HIGH_SCORE, rule.high_clear_score,
                 rule.for_ms, rule.clear_for_ms),
        )  # fmt: skip
        self.machines = (EpisodeMachine(self.bands[0]), EpisodeMachine(self.bands[1]))
        self.initial = News2State()
        self.span_ms = rule.span_ms

    def step(
        self, state: News2State, sample: Sample, prev_t: int | None, out: list[Any]
    ) -> News2State:
        from processors.tracks import Found  # the engine's output record

        index = INDEX[sample.metric]
        latest = state.latest
        if valid(sample.metric, sample.v):
            latest = (*latest[:index], (sample.t, sample.v), *latest[index + 1 :])
        now = score(latest, sample.t, self.rule.spo2_scale, self.rule.staleness_ms)
        enough = len(now.points) >= self.rule.min_parameters
        total = float(now.total) if enough else math.nan
        medium_value = max(total, RED_AS) if enough and now.red else total
        medium_out: list[Any] = []
        high_out: list[Any] = []
        medium = self.machines[0].step(
            state.medium, _valued(sample, medium_value), prev_t, medium_out
        )
        high = self.machines[1].step(state.high, _valued(sample, total), prev_t, high_out)
        for band, changes in zip(self.bands, (medium_out, high_out), strict=True):
            for change in changes:
                out.append(Found(band.rule, band.severity, None, change, now.detail()))
        return News2State(latest, medium, high)

    def idle(self, state: News2State) -> bool:
        return state.medium.phase is Phase.IDLE and state.high.phase is Phase.IDLE


def _valued(sample: Sample, value: float) -> Sample:
    return Sample(sample.t, sample.device_id, value, sample.metric)

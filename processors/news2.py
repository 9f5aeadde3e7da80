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

The track also emits the score itself (`Scored`) when its total, band or parameter set
changes, for the score records of vitals.news2 (docs/scores.md). A log of what it emitted
per event time keeps recomputes after late data from repeating unchanged records, and lets
them correct a record the late data changed.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from processors.episodes import IDLE, Change, EpisodeMachine, EpisodeState, Phase
from processors.tracks import Found
from processors.windows import Sample
from vitals.contract import NEWS2_PARAMETERS, News2Score, ScoredParameter

PARAMETERS = NEWS2_PARAMETERS  # the charting order, from the score records' contract
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


# The points of each parameter but SpO2 (whose points depend on the scale and on oxygen).
POINTS: dict[str, Callable[[float], int]] = {
    "resp_rate": resp_rate_points,
    "supplemental_o2": oxygen_points,
    "systolic_bp": systolic_points,
    "heart_rate": pulse_points,
    "consciousness": consciousness_points,
    "body_temp": temperature_points,
}
_O2 = INDEX["supplemental_o2"]


def valid(parameter: str, v: float) -> bool:
    """Coded parameters must carry one of their codes; others passed the gateway's range."""
    if parameter == "consciousness":
        return v in (0, 1, 2, 3, 4)
    if parameter == "supplemental_o2":
        return v in (0, 1)
    return math.isfinite(v)


def band_of(total: int, red: bool) -> str:
    if total >= HIGH_SCORE:
        return "high"
    if total >= MEDIUM_SCORE:
        return "medium"
    if red:
        return "low-medium"
    return "low" if total > 0 else "zero"


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
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
        return band_of(self.total, self.red)

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


# A parameter's latest valid value: (event time, value, points on air, points on oxygen),
# scored once when it arrives on the patient's SpO2 scale. Only SpO2's points depend on
# oxygen (on scale 2); the others' two are the same.
Entry = tuple[int, float, int, int]
Latest = tuple[Entry | None, ...]  # per PARAMETERS


def entry(parameter: str, t: int, v: float, scale: int) -> Entry:
    if parameter == "spo2":
        on_air = spo2_points(v, scale, False)
        return t, v, on_air, on_air if scale == 1 else spo2_points(v, scale, True)
    points = POINTS[parameter](v)
    return t, v, points, points


def tally(latest: Latest, at: int, staleness_ms: int) -> tuple[int, bool, int]:
    """NEWS2 at event time `at` from each parameter's latest value within the staleness:
    the total, whether a single parameter scored 3, and the parameters used (a bit per
    PARAMETERS index). Runs for every reading of the seven parameters: nothing built."""
    oldest = at - staleness_ms
    oxygen = latest[_O2]
    scored = 3 if oxygen is not None and oxygen[0] >= oldest and oxygen[1] == 1 else 2
    total, red, used = 0, False, 0
    for index, found in enumerate(latest):
        if found is None or found[0] < oldest:
            continue
        points = found[3] if scored == 3 else found[2]  # literal indexes: ints to mypy
        total += points
        red = red or points == 3
        used |= 1 << index
    return total, red, used


def score(latest: Latest, at: int, scale: int, staleness_ms: int) -> Score:
    """The score of `tally` with each parameter's points and age: what a record says.
    `latest` was scored on `scale`."""
    total, red, used = tally(latest, at, staleness_ms)
    oxygen = latest[_O2]
    scored = 3 if oxygen is not None and used >> _O2 & 1 and oxygen[1] == 1 else 2
    points: dict[str, int] = {}
    ages: dict[str, int] = {}
    for index, (name, found) in enumerate(zip(PARAMETERS, latest, strict=True)):
        if found is not None and used >> index & 1:
            points[name] = found[3] if scored == 3 else found[2]
            ages[name] = at - found[0]
    return Score(total, red, points, ages, scale)


@dataclass(frozen=True, slots=True)
class News2Rule:
    spo2_scale: int
    staleness_ms: int
    min_parameters: int
    for_ms: int
    clear_for_ms: int
    medium_clear_score: float
    high_clear_score: float
    suppress_ms: int = 0  # news2_medium repeats only: a high NEWS2 is never suppressed
    dip_ms: int = 0  # a pending run survives dips below the band totalling less

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
        return self.staleness_ms + max(self.for_ms + self.dip_ms, self.clear_for_ms)


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


# What makes a score record differ from the previous one: total, band, parameters used
# (a bit per PARAMETERS index). The ages alone change with every reading and are left out.
Signature = tuple[int, str, int]


def signature(total: int, red: bool, used: int) -> Signature:
    return total, band_of(total, red), used


@dataclass(frozen=True, slots=True)
class Scored:
    """A score record the track emitted: the score at event time `t` and the values used."""

    t: int
    score: Score
    values: dict[str, float]


def score_record(patient_id: str, scored: Scored, computed: int) -> News2Score:
    """The vitals.news2 message of a score the track emitted."""
    s = scored.score
    return News2Score(
        patient_id=patient_id,
        t=scored.t,
        news2=s.total,
        band=s.band,
        red=s.red,
        partial=s.partial,
        scale=s.scale,
        parameters={
            p: ScoredParameter(s.points[p], scored.values[p], s.ages_ms[p])
            for p in PARAMETERS
            if p in s.points
        },
        computed=computed,
    )


BANDS = ("zero", "low", "low-medium", "medium", "high")


def _pack(sig: Signature) -> int:
    total, band, used = sig
    return total << 10 | BANDS.index(band) << 7 | used


def _unpack(packed: int) -> Signature:
    return packed >> 10, BANDS[packed >> 7 & 7], packed & 127


class ScoreLog:
    """The signature last emitted per event time (what the store holds there), while a
    recompute can still reach that time.

    In columns (a record is 20 bytes: 8 + 4 + 8; as a dict of tuples it was ~150, and a patient's
    NEWS2 changes every few seconds over a window of hours): times and packed signatures
    sorted by time for lookups, and the times in the order first recorded for pruning."""

    __slots__ = ("_ts", "_sigs", "_order")

    def __init__(self) -> None:
        self._ts: array[int] = array("q")
        self._sigs: array[int] = array("i")
        self._order: array[int] = array("q")  # the times in the order first recorded

    def __len__(self) -> int:
        return len(self._ts)

    def get(self, t: int) -> Signature | None:
        i = bisect.bisect_left(self._ts, t)
        if i < len(self._ts) and self._ts[i] == t:
            return _unpack(self._sigs[i])
        return None

    def copy(self) -> ScoreLog:
        made = ScoreLog()
        made._ts, made._sigs, made._order = (
            array("q", self._ts),
            array("i", self._sigs),
            array("q", self._order),
        )
        return made

    def add(self, t: int, sig: Signature) -> None:
        i = bisect.bisect_left(self._ts, t)
        if i < len(self._ts) and self._ts[i] == t:
            self._sigs[i] = _pack(sig)
            return
        self._ts.insert(i, t)
        self._sigs.insert(i, _pack(sig))
        self._order.append(t)

    def prune(self, before: int | None) -> None:
        """Forget records before `before`, visiting only those: in-order data records in
        event-time order. One a recompute recorded behind newer times goes with them; it
        is older than they are, so no recompute asks for it meanwhile."""
        order = self._order
        gone = 0
        while before is not None and gone < len(order) and order[gone] < before:
            i = bisect.bisect_left(self._ts, order[gone])
            del self._ts[i], self._sigs[i]
            gone += 1
        if gone:
            del order[:gone]


# Not frozen: built for every reading, and a frozen dataclass costs four times as much to
# build. Treated as immutable all the same (windows keep them as checkpoints).
@dataclass(slots=True, unsafe_hash=True)
class News2State:
    latest: Latest = (None,) * len(PARAMETERS)
    medium: EpisodeState = IDLE
    high: EpisodeState = IDLE
    scored: Signature | None = None  # of the score at this sample; None: too few parameters


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
        self.machines = (
            EpisodeMachine(self.bands[0], rule.suppress_ms, rule.dip_ms),
            EpisodeMachine(self.bands[1], dip_ms=rule.dip_ms),
        )
        self.initial = News2State()
        self.span_ms = rule.span_ms
        self.log = ScoreLog()

    def step(
        self, state: News2State, sample: Sample, prev_t: int | None, out: list[Any]
    ) -> News2State:
        rule, index, t = self.rule, INDEX[sample.metric], sample.t
        latest = state.latest
        if valid(sample.metric, sample.v):
            fresh = entry(sample.metric, t, sample.v, rule.spo2_scale)
            latest = (*latest[:index], fresh, *latest[index + 1 :])
        total, red, used = tally(latest, t, rule.staleness_ms)
        enough = used.bit_count() >= rule.min_parameters
        value = float(total) if enough else math.nan
        medium_value = max(value, RED_AS) if enough and red else value
        medium_out: list[Change] = []
        high_out: list[Change] = []
        device_id = sample.device_id
        medium = self.machines[0].step(state.medium, t, medium_value, device_id, prev_t, medium_out)
        high = self.machines[1].step(state.high, t, value, device_id, prev_t, high_out)
        now: Score | None = None  # the whole score, built only for what is emitted
        if medium_out or high_out:
            now = score(latest, t, rule.spo2_scale, rule.staleness_ms)
            for band, changes in zip(self.bands, (medium_out, high_out), strict=True):
                out.extend(Found(band.rule, band.severity, None, c, now.detail()) for c in changes)
        scored = signature(total, red, used) if enough else None
        if scored is not None and self._record_due(t, scored, state.scored):
            self.log.add(t, scored)
            now = now or score(latest, t, rule.spo2_scale, rule.staleness_ms)
            values = {
                p: e[1]
                for p, e in zip(PARAMETERS, latest, strict=True)
                if e is not None and p in now.points
            }
            out.append(Scored(t, now, values))
        return News2State(latest, medium, high, scored)

    def _record_due(self, t: int, scored: Signature, before: Signature | None) -> bool:
        """A change from the previous sample's score not yet recorded at `t`; or, in a
        recompute, a record at `t` that late data made wrong (re-emitted corrected)."""
        emitted = self.log.get(t)
        if scored != before:
            return emitted != scored
        return emitted is not None and emitted != scored

    def idle(self, state: News2State) -> bool:
        return state.medium.phase is Phase.IDLE and state.high.phase is Phase.IDLE

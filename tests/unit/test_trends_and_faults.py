"""Personal baselines, sensor faults and suppression of repeats, on the pure engine.

Each rule is checked at its boundaries with the built-in defaults (rules.toml) unless a
test says otherwise; rules are changed through the rules document, as an operator would.
"""

from __future__ import annotations

import copy
import math
import tomllib
from typing import Any

import pytest

from evaluation import physiology as simulate
from processors import baseline, faults
from processors.engine import Engine
from processors.rules import DEFAULT_RULES_FILE, parse_rules
from processors.windows import Sample
from vitals.contract import Detection, Reading, Upload

T0 = 1_800_000_000_000  # event times below are seconds after T0
H = 3600.0


def ms(seconds: float) -> int:
    return T0 + round(seconds * 1000)


def rules_doc(**overrides: dict[str, Any]) -> dict[str, Any]:
    doc = tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    doc = copy.deepcopy(doc)
    for rule, fields in overrides.items():
        doc["defaults"][rule].update(fields)
    return doc


def engine(**overrides: dict[str, Any]) -> Engine:
    return Engine(parse_rules(rules_doc(**overrides), source="test"))


def feed(
    e: Engine,
    points: list[tuple[float, float]],
    metric: str,
    *,
    patient: str = "p-1",
    device: str = "d-1",
) -> list[Detection]:
    """One upload with readings (seconds after T0, value), received as the newest is made."""
    readings = tuple(Reading(metric, ms(s), v, "") for s, v in points)
    arrived = max(r.t for r in readings)
    return e.feed("p0", Upload("u", "gw", device, patient, arrived, readings), now=arrived)


def each(
    e: Engine, metric: str, start: float, stop: float, step: float, value: Any
) -> list[Detection]:
    """One reading per upload from start to stop inclusive; `value` is a number or f(t)."""
    found: list[Detection] = []
    n = 0
    while start + n * step <= stop + 1e-9:
        t = start + n * step
        found += feed(e, [(t, value(t) if callable(value) else value)], metric)
        n += 1
    return found


def states(found: list[Detection]) -> list[tuple[str, str, int, int]]:
    return [(d.rule, d.state, d.episode_start, d.at) for d in found]


def wobble(centre: float, amplitude: float = 3.0) -> Any:
    """A value that never repeats exactly, around `centre` (no flat line)."""
    return lambda t: round(centre + amplitude * math.sin(t / 97.0) + (t % 7) * 0.01, 2)


# --- flat line ----------------------------------------------------------------------------


def test_flat_line_opens_at_10_minutes_of_the_same_heart_rate_and_says_it_is_the_device() -> None:
    e = engine()
    assert each(e, "heart_rate", 0, 599.999, 10, 72.0) == []
    [opened] = feed(e, [(600, 72.0)], "heart_rate")
    assert states([opened]) == [("hr_flat", "opened", ms(600), ms(600))]
    assert (opened.severity, opened.metric, opened.value) == ("low", "heart_rate", 72.0)
    assert "sensor fault" in opened.detail and "not a clinical finding" in opened.detail
    # Moving again: resolves once the value has moved for 60 s.
    assert each(e, "heart_rate", 610, 669.999, 10, wobble(72)) == []
    assert states(feed(e, [(670, 73.0)], "heart_rate")) == [
        ("hr_flat", "resolved", ms(600), ms(670))
    ]


def test_flat_line_needs_its_readings_and_no_gap() -> None:
    # Every 60 s: 19 readings over 18 min are not enough, the 20th is.
    e = engine()
    assert each(e, "heart_rate", 0, 1080, 60, 72.0) == []
    assert states(feed(e, [(1140, 72.0)], "heart_rate")) == [
        ("hr_flat", "opened", ms(1140), ms(1140))
    ]
    # Every 10 s, but one gap of 121 s (> 120 s) restarts the run.
    e = engine()
    assert each(e, "heart_rate", 0, 300, 10, 72.0) == []
    assert each(e, "heart_rate", 421, 1020, 10, 72.0) == []
    assert states(feed(e, [(1021, 72.0)], "heart_rate")) == [
        ("hr_flat", "opened", ms(1021), ms(1021))
    ]


def test_a_held_flat_line_is_kept_out_of_the_thresholds() -> None:
    # A sensor stuck at 140 /min: with a 60 s flat line its readings stop counting before
    # hr_high's 300 s, so only the sensor episode opens.
    e = engine(hr_flat={"for_s": 60.0, "min_readings": 5})
    found = each(e, "heart_rate", 0, 1200, 10, 140.0)
    assert [d.rule for d in found] == ["hr_flat"]


# --- impossible jumps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_s", "drop", "suspect"),
    [(5.0, 15.0, True), (5.001, 15.0, False), (5.0, 14.9, False), (1.0, 30.0, True)],
)
def test_a_jump_is_at_least_15_points_within_5_s(gap_s: float, drop: float, suspect: bool) -> None:
    # spo2_low after 10 s here: a suspect reading (and the 20 s after it, still away from
    # the trusted level) must not start its run.
    e = engine(spo2_low={"for_s": 10.0})
    assert feed(e, [(0, 97.0), (gap_s, 97.0 - drop)], "spo2") == []
    found = feed(e, [(gap_s + 10, 97.0 - drop), (gap_s + 20, 97.0)], "spo2")
    assert [d.rule for d in found] == ([] if suspect else ["spo2_low"])


def test_a_short_artefact_dip_opens_nothing() -> None:
    e = engine(spo2_low={"for_s": 10.0})
    dip = [(0, 97.0), (5, 97.0), (10, 70.0), (15, 71.0), (20, 72.0), (25, 97.0), (30, 97.5)]
    assert feed(e, dip, "spo2") == []


def test_a_probe_off_for_longer_opens_a_sensor_episode_then_the_level_is_believed() -> None:
    e = engine(spo2_low={"for_s": 10.0})
    assert feed(e, [(0, 97.0), (5, 97.0)], "spo2") == []
    found = each(e, "spo2", 10, 120, 5, wobble(75, 0.5))
    # Suspect from 10 s: 30 s later a sensor episode. The hold ends at 70 s: from then the
    # low level is believed, and spo2_low opens 10 s after that; the jump episode resolves
    # 60 s after its readings stopped being suspect.
    assert states(found) == [
        ("spo2_jump", "opened", ms(10), ms(40)),
        ("spo2_low", "opened", ms(70), ms(80)),
    ]
    assert found[0].severity == "low" and "sensor fault" in found[0].detail
    assert states(feed(e, [(130, 75.3)], "spo2")) == [("spo2_jump", "resolved", ms(10), ms(130))]


def test_the_return_from_a_dip_just_under_the_limit_is_no_jump() -> None:
    # The motion artefact the alarm-burden run found: 98 -> 84 (14 points, accepted), 83,
    # then back to 98 in 5 s (15 points from 83). The return goes back to the trusted level
    # (the median of the last readings), so it and the readings after it are not suspect:
    # no sensor episode, and spo2_low (10 s here) still judges them.
    e = engine(spo2_low={"for_s": 10.0})
    assert each(e, "spo2", 0, 45, 5, 98.0) == []
    assert feed(e, [(50, 84.0), (55, 83.0), (60, 98.0)], "spo2") == []
    assert each(e, "spo2", 65, 300, 5, wobble(98, 0.4)) == []
    # The readings after the return count: a fall below 90 % opens spo2_low 10 s later.
    e = engine(spo2_low={"for_s": 10.0})
    feed(e, [(t, 98.0) for t in range(0, 50, 5)], "spo2")
    feed(e, [(50, 84.0), (55, 83.0), (60, 98.0), (65, 94.0), (70, 89.0)], "spo2")
    assert states(feed(e, [(75, 89.0), (80, 88.0)], "spo2")) == [
        ("spo2_low", "opened", ms(70), ms(80))
    ]


def test_an_excursion_longer_than_half_the_level_readings_moves_the_level() -> None:
    # 5 of the last 9 trusted readings at 83: the median, the level, is 83 now, and the
    # step back up to 98 is a jump away from it. With 4 of 9 the level is still 98.
    checked = faults_checked([98.0] * 3 + [84.0] + [83.0] * 5 + [98.0])
    assert checked[-1] is True and not any(checked[:-1])
    assert not any(faults_checked([98.0] * 5 + [84.0] + [83.0] * 3 + [98.0]))


def faults_checked(values: list[float], every_ms: int = 5000) -> list[bool]:
    """Whether faults.check calls each reading (one every 5 s) suspect, with spo2_jump."""
    rule = rules_at_defaults().jump("spo2")
    assert rule is not None
    state, out = faults.CLEAN, []
    for i, v in enumerate(values):
        state, verdict = faults.check(state, Sample(i * every_ms, "d", v, "spo2"), None, rule)
        out.append(verdict.suspect)
    return out


def test_repeated_spikes_open_a_sensor_episode() -> None:
    # A probe flicking between 97 % and 70 % every other reading: each spike is suspect,
    # the clean reading between two spikes is a 5 s dip, three of them 15 s (< dip_s 20 s):
    # the run holds, 30 s after the first spike a sensor episode opens; spo2_low never does.
    e = engine(spo2_low={"for_s": 10.0})
    assert each(e, "spo2", 0, 5, 5, 97.0) == []
    found = each(e, "spo2", 10, 120, 5, lambda t: 70.0 if t % 10 == 0 else 97.0)
    assert states(found) == [("spo2_jump", "opened", ms(10), ms(40))]


def test_spikes_with_more_clean_readings_between_them_open_nothing() -> None:
    # A spike every 15 s: two clean readings (10 s) between spikes; two such dips add up to
    # dip_s (20 s) before the run has lasted 30 s, so the run starts again and again.
    e = engine(spo2_low={"for_s": 10.0})
    assert each(e, "spo2", 0, 5, 5, 97.0) == []
    assert each(e, "spo2", 10, 300, 5, lambda t: 70.0 if t % 15 == 10 else 97.0) == []


@pytest.mark.parametrize(("gap_s", "jump"), [(2.0, True), (2.5, False)])
def test_heart_rate_jumps_80_within_2_s(gap_s: float, jump: bool) -> None:
    e = engine(hr_high={"for_s": 10.0})
    feed(e, [(0, 70.0)], "heart_rate")
    found = each(e, "heart_rate", gap_s, gap_s + 40, gap_s, wobble(150, 0.5))
    rules = [d.rule for d in found]
    assert ("hr_jump" in rules) is jump and ("hr_high" in rules) is not jump


# --- personal baseline ----------------------------------------------------------------------


def test_baseline_learns_the_mean_and_does_not_chase_a_deviation() -> None:
    rule = rules_at_defaults().baseline("heart_rate")
    assert rule is not None
    state, deviation = baseline.EMPTY, math.nan
    for i in range(8 * 60):  # 8 h at 70 +- 3 /min, a reading a minute
        state, deviation = baseline.learn(state, ms(i * 60), wobble(70)(i * 60.0), rule)
    assert abs(state.baseline - 70) < 0.5 and abs(deviation) < 1
    for i in range(8 * 60, 14 * 60):  # then 6 h at 100
        state, deviation = baseline.learn(state, ms(i * 60), 100.0, rule)
    # A plain EWMA (tau 4 h) would have moved 78 % of the way, to ~93; this one learns at a
    # tenth of its rate while deviating, and each step at most 4 sd.
    assert state.baseline < 75 and state.level > 99 and deviation > rule.deviation_sd


def test_no_trend_is_judged_during_the_warm_up() -> None:
    e = engine()
    # 5 h 59 min of a level far from the first hour's: the baseline is still warming up.
    assert each(e, "heart_rate", 0, H, 60, wobble(65)) == []
    assert each(e, "heart_rate", H + 60, 6 * H - 60, 60, wobble(115)) == []


def test_a_sustained_rise_opens_a_low_trend_episode_after_2_h_and_resolves() -> None:
    e = engine()
    assert each(e, "heart_rate", 0, 8 * H, 60, wobble(70)) == []
    opened = each(e, "heart_rate", 8 * H + 60, 11 * H, 60, wobble(105))
    [trend] = opened
    assert (trend.rule, trend.state, trend.severity) == ("hr_baseline", "opened", "low")
    assert trend.at - trend.episode_start == 7_200_000  # the persistence, exactly
    assert ms(8 * H) < trend.episode_start <= ms(8 * H + 900)  # once the level has risen
    assert "baseline" in trend.detail and (trend.value or 0) > 4  # sd above the baseline
    resolved = each(e, "heart_rate", 11 * H + 60, 13 * H, 60, wobble(70))
    assert [(d.rule, d.state) for d in resolved] == [("hr_baseline", "resolved")]
    assert resolved[0].alert_id == trend.alert_id


def test_a_rise_shorter_than_the_persistence_or_within_4_sd_opens_nothing() -> None:
    e = engine()
    each(e, "heart_rate", 0, 8 * H, 60, wobble(70))
    assert each(e, "heart_rate", 8 * H + 60, 9.5 * H, 60, wobble(110)) == []  # 90 min bout
    assert each(e, "heart_rate", 9.5 * H + 60, 14 * H, 60, wobble(80)) == []  # < 4 sd


def test_spo2_baseline_watches_a_fall() -> None:
    e = engine()
    assert each(e, "spo2", 0, 8 * H, 60, wobble(97, 1.0)) == []
    found = each(e, "spo2", 8 * H + 60, 11 * H, 60, wobble(92, 0.2))  # 5 points down
    assert [(d.rule, d.state, (d.value or 0) > 4) for d in found] == [
        ("spo2_baseline", "opened", True)
    ]


# --- suppression of repeats -------------------------------------------------------------------


def hr_episode(e: Engine, start: float) -> list[Detection]:
    """hr_high (10 s persistence, 10 s clear here): opens at start + 10, resolves at +30."""
    return each(e, "heart_rate", start, start + 10, 5, wobble(140, 0.5)) + each(
        e, "heart_rate", start + 20, start + 30, 5, wobble(100, 0.5)
    )


def short_hr_rules() -> dict[str, Any]:
    return {"hr_high": {"for_s": 10.0, "clear_for_s": 10.0}}


@pytest.mark.parametrize(("after_s", "suppressed"), [(1799.999, True), (1800.0, False)])
def test_a_repeat_within_30_min_of_the_resolution_is_recorded_not_paged(
    after_s: float, suppressed: bool
) -> None:
    e = engine(**short_hr_rules())
    first = hr_episode(e, 0)
    assert [(d.state, d.suppressed) for d in first] == [("opened", False), ("resolved", False)]
    resolved_at = (first[1].at - T0) / 1000
    # The repeat opens 10 s after its run starts: start it so it opens at after_s.
    repeat = hr_episode(e, resolved_at + after_s - 10)
    assert [(d.rule, d.state, d.suppressed) for d in repeat] == [
        ("hr_high", "opened", suppressed),
        ("hr_high", "resolved", suppressed),
    ]
    assert repeat[0].at == first[1].at + round(after_s * 1000)


def test_high_severity_repeats_are_never_suppressed_by_default() -> None:
    e = engine(spo2_low={"for_s": 10.0, "clear_for_s": 10.0})
    first = each(e, "spo2", 0, 10, 5, wobble(85, 0.5)) + each(e, "spo2", 15, 25, 5, 97.5)
    again = each(e, "spo2", 60, 70, 5, wobble(85, 0.5))
    assert [(d.state, d.suppressed) for d in first + again] == [
        ("opened", False),
        ("resolved", False),
        ("opened", False),
    ]


def test_suppress_s_is_per_rule_and_per_patient() -> None:
    doc = rules_doc(**short_hr_rules())
    doc["patients"] = {"p-quiet": {"hr_high": {"suppress_s": 7200.0}}, "p-all": {}}
    doc["patients"]["p-all"]["hr_high"] = {"suppress_s": 0.0}
    e = Engine(parse_rules(doc, source="test"))

    def repeat_suppressed(patient: str, after_s: float) -> bool:
        each_p = [
            feed(e, [(t, v)], "heart_rate", patient=patient)
            for t, v in [(0, 140), (5, 141), (10, 142), (20, 100), (25, 101), (30, 102)]
        ]
        start = 30 + after_s - 10
        again = [
            feed(e, [(start + dt, 140 + dt / 5)], "heart_rate", patient=patient)
            for dt in (0, 5, 10)
        ]
        assert [d.state for found in each_p for d in found] == ["opened", "resolved"]
        [opened] = [d for found in again for d in found]
        return opened.suppressed

    assert repeat_suppressed("p-quiet", 3600) is True
    assert repeat_suppressed("p-all", 60) is False


def test_a_suppressed_flag_survives_the_detections_topic() -> None:
    from vitals.contract import decode_detection, encode_detection

    e = engine(**short_hr_rules())
    hr_episode(e, 0)
    [opened, _] = hr_episode(e, 100)
    assert opened.suppressed and decode_detection(encode_detection(opened)) == opened


def test_a_detection_whose_suppressed_flag_is_not_a_boolean_is_refused() -> None:
    import orjson

    from vitals.contract import decode_detection, encode_detection
    from vitals.errors import ContractError

    e = engine(**short_hr_rules())
    [opened, _] = hr_episode(e, 0)
    doc = orjson.loads(encode_detection(opened))
    assert decode_detection(orjson.dumps(doc | {"suppressed": False})) == opened
    with pytest.raises(ContractError, match="suppressed must be true or false"):
        decode_detection(orjson.dumps(doc | {"suppressed": "yes"}))
    del doc["suppressed"]  # from a processor of before: not a repeat
    assert decode_detection(orjson.dumps(doc)).suppressed is False


# --- the simulator's normal patients stay quiet -----------------------------------------------


def rules_at_defaults() -> Any:
    return parse_rules(rules_doc(), source="test").defaults


def test_the_simulators_normal_patients_trip_none_of_these_detectors() -> None:
    """`make run`'s physiology (vitalsctl/simulate.py), 16 h at its default 5 s, no events."""
    watched = {"heart_rate", "spo2", "resp_rate"}
    e = engine()
    found: list[Detection] = []
    for index in range(2):
        patient = simulate.Patient(index, seed=7)
        start = T0
        for hour in range(16):  # the 6 h warm-up, then the day's peak and night
            lo, hi = start + round(hour * H * 1000), start + round((hour + 1) * H * 1000)
            rows = [r for r in patient.readings(lo, hi, 5_000, []) if r["metric"] in watched]
            readings = tuple(
                Reading(r["metric"], _ms(r["t"]), float(r["v"]), r["unit"]) for r in rows
            )
            upload = Upload("u", "gw", patient.device_id, patient.patient_id, hi, readings)
            found += e.feed("p0", upload, now=hi)
    assert found == []


def _ms(iso: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(iso).timestamp() * 1000)

"""Detectors on the pure engine: sustained breach episodes, late data, device silence."""

from __future__ import annotations

import pytest

from processors.engine import Engine
from processors.rules import rules_from_settings
from processors.silence import DeviceSilence
from vitals import contract
from vitals.contract import Detection, Reading, Upload
from vitals.errors import ConfigError
from vitals.settings import Settings

T0 = 1_800_000_000_000  # event times below are seconds after T0
LATENESS_S = 3600.0


def ms(seconds: float) -> int:
    return T0 + round(seconds * 1000)


def engine(**overrides: float) -> Engine:
    return Engine(rules_from_settings(Settings(**overrides)))  # type: ignore[arg-type]


def feed(
    e: Engine,
    points: list[tuple[float, float]],
    *,
    metric: str = "spo2",
    patient: str = "p-1",
    device: str = "d-1",
    received: int | None = None,
    now: int | None = None,
) -> list[Detection]:
    """One upload with readings (seconds after T0, value), received as the newest is made."""
    readings = tuple(Reading(metric, ms(s), v, "%") for s, v in points)
    arrived = received if received is not None else max(r.t for r in readings)
    upload = Upload("u", "gw", device, patient, arrived, readings)
    return e.feed("p0", upload, now=now if now is not None else arrived)


def series(
    e: Engine, start: float, stop: float, step: float, value: float, **kw: object
) -> list[Detection]:
    """Readings one upload each, from start to stop inclusive."""
    found: list[Detection] = []
    t = start
    while t <= stop + 1e-9:
        found += feed(e, [(t, value)], **kw)  # type: ignore[arg-type]
        t += step
    return found


def states(found: list[Detection]) -> list[tuple[str, str, int, int]]:
    return [(d.rule, d.state, d.episode_start, d.at) for d in found]


# --- sustained breach ------------------------------------------------------------------


def test_spo2_low_opens_exactly_when_the_breach_has_lasted_120_s() -> None:
    e = engine()
    assert feed(e, [(0, 88), (30, 86), (60, 87), (119.999, 89)]) == []
    [opened] = feed(e, [(120, 88.5)])
    assert opened.state == "opened" and opened.rule == "spo2_low"
    assert (opened.episode_start, opened.at) == (ms(0), ms(120))
    assert opened.alert_id == contract.alert_id("p-1", "spo2_low", ms(0))
    assert (opened.value, opened.metric, opened.device_id) == (86, "spo2", "d-1")
    assert (opened.severity, opened.retrospective) == ("high", False)


def test_a_reading_at_the_threshold_breaks_the_run() -> None:
    e = engine()
    # 90 is not below 90: the run restarts at 61 s.
    assert feed(e, [(0, 85), (60, 90), (61, 85), (180, 85)]) == []
    assert states(feed(e, [(181, 85)])) == [("spo2_low", "opened", ms(61), ms(181))]


def test_hysteresis_only_values_back_at_the_clear_level_resolve() -> None:
    e = engine()
    series(e, 0, 120, 10, 85)
    # 91 is no longer a breach but not clear (< 92): ten minutes of it resolve nothing.
    assert series(e, 130, 730, 10, 91) == []
    assert series(e, 740, 799, 59 / 5, 92) == []  # 59 s of clear
    [resolved] = feed(e, [(800, 93)])
    assert (resolved.state, resolved.at) == ("resolved", ms(800))
    assert resolved.alert_id == contract.alert_id("p-1", "spo2_low", ms(0))
    assert resolved.value == 85  # the worst of the episode


def test_clear_delay_is_exact_and_restarts_after_a_relapse() -> None:
    e = engine()
    series(e, 0, 120, 10, 85)
    assert feed(e, [(200, 95), (230, 95), (259.999, 95)]) == []
    assert feed(e, [(260, 91)]) == []  # relapse below the clear level: start over
    assert feed(e, [(270, 95), (329.999, 95)]) == []
    assert states(feed(e, [(330, 95)])) == [("spo2_low", "resolved", ms(0), ms(330))]


def test_one_opened_per_episode_and_a_new_episode_only_after_resolution() -> None:
    e = engine()
    first = series(e, 0, 900, 10, 85)  # 15 minutes of desaturation
    assert states(first) == [("spo2_low", "opened", ms(0), ms(120))]
    assert states(series(e, 910, 970, 10, 95)) == [("spo2_low", "resolved", ms(0), ms(970))]
    second = series(e, 1000, 1120, 10, 84)
    assert states(second) == [("spo2_low", "opened", ms(1000), ms(1120))]
    assert second[0].alert_id != first[0].alert_id


def test_hr_high_is_above_130_for_300_s_and_resolves_at_120() -> None:
    e = engine()
    kw = {"metric": "heart_rate"}
    assert feed(e, [(0, 130), (100, 130)], **kw) == []  # 130 is not above 130
    assert series(e, 200, 499, 20, 140, **kw) == []
    [opened] = feed(e, [(500, 150)], **kw)
    assert (opened.rule, opened.severity, opened.episode_start, opened.value) == (
        "hr_high",
        "medium",
        ms(200),
        150,
    )
    assert series(e, 510, 700, 10, 121, **kw) == []  # not back to <= 120
    resolved = series(e, 710, 770, 10, 120, **kw)
    assert states(resolved) == [("hr_high", "resolved", ms(200), ms(770))]


def test_rules_follow_settings() -> None:
    e = engine(spo2_low_threshold=85, spo2_low_clear=88, spo2_low_for_s=30, clear_for_s=0)
    assert series(e, 0, 100, 10, 86) == []
    assert states(feed(e, [(110, 84), (140, 84)])) == [("spo2_low", "opened", ms(110), ms(140))]
    assert states(feed(e, [(141, 88)])) == [("spo2_low", "resolved", ms(110), ms(141))]


# --- arrival time, lateness, retrospective ------------------------------------------------


def test_readings_older_than_the_lateness_give_retrospective_detections() -> None:
    e = engine()
    late = T0 + round((125 + LATENESS_S) * 1000)
    [opened] = feed(e, [(s, 85) for s in range(0, 121, 10)], received=late)
    assert opened.retrospective
    # On time for the same gateway: paged.
    fresh = engine()
    [opened] = feed(fresh, [(s, 85) for s in range(0, 121, 10)], received=ms(125))
    assert not opened.retrospective


def test_a_lagging_processor_marks_old_state_changes_retrospective() -> None:
    e = engine()
    processed = T0 + round((121 + LATENESS_S) * 1000)
    [opened] = feed(e, [(s, 85) for s in range(0, 121, 10)], received=ms(121), now=processed)
    assert opened.retrospective and opened.detected == processed


def test_duplicate_readings_from_retried_uploads_change_nothing() -> None:
    e = engine()
    points = [(s, 85.0) for s in range(0, 121, 10)]
    assert len(feed(e, points)) == 1
    assert feed(e, points) == []  # the gateway retried the whole upload
    assert e.counts["duplicate"] == len(points)
    assert e.counts["conflict"] == 0


def test_a_conflicting_value_is_ignored_so_detections_follow_the_first() -> None:
    # Normal first, desaturated later at the same times: the database keeps the normal
    # values, so nothing opens.
    calm = engine()
    assert feed(calm, [(s, 97.0) for s in range(0, 121, 10)]) == []
    assert feed(calm, [(s, 85.0) for s in range(0, 121, 10)]) == []
    assert calm.counts["conflict"] == 13
    # The reverse: the desaturation is of record; normal values later do not resolve it.
    low = engine()
    [opened] = feed(low, [(s, 85.0) for s in range(0, 121, 10)])
    assert feed(low, [(s, 97.0) for s in range(0, 121, 10)]) == []
    [resolved] = feed(low, [(s, 97.0) for s in range(130, 200, 10)])
    assert (opened.state, resolved.state) == ("opened", "resolved")
    assert low.counts["conflict"] == 13


# --- late data that contradicts an emitted decision -----------------------------------------


def test_late_reading_splitting_an_open_episode_does_not_reopen_it() -> None:
    e = engine()
    [opened] = series(e, 0, 200, 10, 85)
    # A late normal reading inside the run: in order, the episode would have opened at 185.
    assert feed(e, [(65, 95)], received=ms(205)) == []
    assert series(e, 210, 400, 10, 85) == []  # still the same episode: no second alert
    [resolved] = series(e, 410, 470, 10, 95)
    assert resolved.alert_id == opened.alert_id
    assert e.counts["late_conflict"] >= 1


def test_late_earlier_breach_joins_the_episode_already_alerted() -> None:
    e = engine()
    [opened] = series(e, 100, 220, 10, 85)
    assert opened.episode_start == ms(100)
    # The device's older readings arrive: the run really began at 0.
    assert feed(e, [(s, 84) for s in range(0, 100, 10)], received=ms(225)) == []
    [resolved] = series(e, 230, 290, 10, 95)
    assert resolved.alert_id == opened.alert_id


def test_late_earlier_episode_over_before_the_alerted_one_is_emitted_as_a_pair() -> None:
    e = engine()
    [later] = series(e, 600, 720, 10, 85)
    backlog = [(s, 85) for s in range(0, 121, 10)] + [(s, 95) for s in range(130, 191, 10)]
    pair = feed(e, backlog, received=ms(725))
    assert states(pair) == [
        ("spo2_low", "opened", ms(0), ms(120)),
        ("spo2_low", "resolved", ms(0), ms(190)),
    ]
    [resolved] = series(e, 730, 790, 10, 95)
    assert resolved.alert_id == later.alert_id


def test_late_earlier_episode_running_into_the_alerted_one_is_merged_into_it() -> None:
    e = engine()
    [later] = series(e, 600, 720, 10, 85)
    # Breaching from 0 to 590 with a single normal reading at 300: an earlier episode that
    # never cleared before the alerted one began.
    backlog = [(s, 85) for s in range(0, 300, 10)] + [(300, 91)]
    backlog += [(s, 85) for s in range(310, 600, 10)]
    assert feed(e, backlog, received=ms(725)) == []
    [resolved] = series(e, 730, 790, 10, 95)
    assert resolved.alert_id == later.alert_id


# --- device silence -------------------------------------------------------------------------


def test_device_silence_opens_on_the_tick_and_resolves_when_the_device_uploads() -> None:
    silence = DeviceSilence(after_ms=2_000)
    assert silence.arrived("p-1", "d-1", at=10_000, now=10_000) is None
    assert silence.arrived("p-1", "d-2", at=11_000, now=11_000) is None
    assert silence.check(clock=11_999, now=11_999) == []
    [opened] = silence.check(clock=12_000, now=12_000)
    assert (opened.rule, opened.state, opened.severity) == ("device_silence", "opened", "low")
    assert (opened.device_id, opened.episode_start, opened.at) == ("d-1", 10_000, 12_000)
    assert opened.alert_id == contract.alert_id("p-1", "device_silence", 10_000)
    assert silence.check(clock=12_500, now=12_500) == []  # opened once
    [other] = silence.check(clock=13_000, now=13_000)
    assert other.device_id == "d-2"
    resolved = silence.arrived("p-1", "d-1", at=20_000, now=20_050)
    assert resolved is not None and resolved.state == "resolved"
    assert (resolved.alert_id, resolved.at, resolved.detected) == (opened.alert_id, 20_000, 20_050)
    [again] = silence.check(clock=22_000, now=22_000)
    assert again.episode_start == 20_000 and again.alert_id != opened.alert_id


def test_silence_is_judged_at_the_clock_given_not_at_now() -> None:
    silence = DeviceSilence(after_ms=2_000)
    silence.arrived("p-1", "d-1", at=10_000, now=10_000)
    # A lagging partition: read up to 11 s although the wall clock says 60 s.
    assert silence.check(clock=11_000, now=60_000) == []
    [opened] = silence.check(clock=12_000, now=60_000)
    assert (opened.at, opened.detected) == (12_000, 60_000)


def test_engine_resolves_silence_on_the_next_upload_of_that_device() -> None:
    e = engine(silence_after_s=2)
    feed(e, [(0, 97)])
    [opened] = e.check_silence({"p0": ms(5)}, now=ms(5))
    assert opened.rule == "device_silence"
    assert e.check_silence({"p1": ms(50)}, now=ms(50)) == []  # another partition: nothing
    found = feed(e, [(6, 97)])
    assert [(d.rule, d.state, d.alert_id) for d in found] == [
        ("device_silence", "resolved", opened.alert_id)
    ]


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spo2_low_clear": 89.0}, "clear level 89 must be >="),
        ({"hr_high_clear": 131.0}, "clear level 131 must be <="),
        ({"spo2_low_for_s": -1.0}, "spo2_low_for_s must not be negative"),
        ({"clear_for_s": -5.0}, "clear_for_s must not be negative"),
        ({"allowed_lateness_s": -1.0}, "allowed_lateness_s must not be negative"),
        ({"silence_after_s": 0.0}, "silence_after_s must be positive"),
        ({"silence_check_interval_s": 0.0}, "silence_check_interval_s must be positive"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start(
    overrides: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        rules_from_settings(Settings(**overrides))  # type: ignore[arg-type]


def test_horizon_is_the_longest_window_plus_the_lateness() -> None:
    rules = rules_from_settings(Settings(allowed_lateness_s=600, hr_high_for_s=300))
    # NEWS2 looks back furthest: its staleness (1 h) plus its clear delay (15 min).
    assert rules.longest_window_ms == 3_600_000 + 900_000
    assert rules.horizon_ms == 4_500_000 + 600_000
    longer = rules_from_settings(Settings(allowed_lateness_s=600, hr_high_for_s=7200))
    assert longer.horizon_ms == 7_200_000 + 600_000

"""NEWS2: every boundary of the RCP 2017 chart, both SpO2 scales, partial scores, episodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.physiology import Patient
from processors import news2
from processors.engine import Engine
from processors.rules import parse_rules, rules_from_settings
from vitals.contract import (
    Detection,
    News2Score,
    Reading,
    ScoredParameter,
    Upload,
    decode_news2_score,
    encode_news2_score,
)
from vitals.db.pgtime import to_ms
from vitals.errors import ContractError
from vitals.settings import Settings

# --- the chart, boundary by boundary (RCP 2017, chart 1) ------------------------------------


@pytest.mark.parametrize(
    ("value", "points"),
    [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (8.4, 3), (20.5, 2)],
)
def test_respiration_rate(value: float, points: int) -> None:
    assert news2.resp_rate_points(value) == points


@pytest.mark.parametrize(
    ("value", "points"), [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
)
def test_spo2_scale_1_ignores_oxygen(value: float, points: int) -> None:
    assert news2.spo2_points(value, 1, on_oxygen=False) == points
    assert news2.spo2_points(value, 1, on_oxygen=True) == points


@pytest.mark.parametrize(
    ("value", "on_oxygen", "points"),
    [
        (83, False, 3),
        (84, False, 2),
        (85, False, 2),
        (86, False, 1),
        (87, False, 1),
        (88, False, 0),
        (92, False, 0),
        (93, False, 0),  # >= 93 on air scores 0
        (100, False, 0),
        (88, True, 0),
        (92, True, 0),
        (93, True, 1),
        (94, True, 1),
        (95, True, 2),
        (96, True, 2),
        (97, True, 3),
        (83, True, 3),
    ],
)
def test_spo2_scale_2(value: float, on_oxygen: bool, points: int) -> None:
    assert news2.spo2_points(value, 2, on_oxygen) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_bp(value: float, points: int) -> None:
    assert news2.systolic_points(value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3)],
)
def test_pulse(value: float, points: int) -> None:
    assert news2.pulse_points(value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)],
)
def test_temperature(value: float, points: int) -> None:
    assert news2.temperature_points(value) == points


def test_consciousness_and_oxygen() -> None:
    assert news2.consciousness_points(0) == 0
    assert [news2.consciousness_points(c) for c in (1, 2, 3, 4)] == [3, 3, 3, 3]
    assert (news2.oxygen_points(0), news2.oxygen_points(1)) == (0, 2)
    assert not news2.valid("consciousness", 1.5) and not news2.valid("supplemental_o2", 2)


# --- the score ---------------------------------------------------------------------------


def latest(at: int = 0, scale: int = 1, **values: float) -> news2.Latest:
    return tuple(
        news2.entry(p, at, values[p], scale) if p in values else None for p in news2.PARAMETERS
    )


def test_a_full_set_sums_and_is_not_partial() -> None:
    # RR 22 (2), SpO2 94 (1), O2 (2), SBP 105 (1), pulse 115 (2), alert (0), 38.5 (1) = 9
    s = news2.score(
        latest(resp_rate=22, spo2=94, supplemental_o2=1, systolic_bp=105, heart_rate=115,
               consciousness=0, body_temp=38.5),
        at=0, scale=1, staleness_ms=1000,
    )  # fmt: skip
    assert (s.total, s.red, s.partial, s.band) == (9, False, False, "high")


def test_bands() -> None:
    def band(**values: float) -> str:
        return news2.score(latest(**values), 0, 1, 1000).band

    assert band(heart_rate=70, resp_rate=16) == "zero"
    assert band(heart_rate=95, resp_rate=22) == "low"  # 1 + 2 = 3
    assert band(heart_rate=70, consciousness=1) == "low-medium"  # a single 3
    assert band(heart_rate=115, resp_rate=22, body_temp=38.5) == "medium"  # 2+2+1 = 5
    assert band(heart_rate=115, resp_rate=22, body_temp=39.5, spo2=95) == "high"  # 2+2+2+1


def test_stale_values_are_left_out_and_ages_reported() -> None:
    entries = list(latest(at=0, heart_rate=115))
    entries[news2.INDEX["spo2"]] = news2.entry("spo2", 9_000, 91.0, 1)
    s = news2.score(tuple(entries), at=10_000, scale=1, staleness_ms=5_000)
    assert s.points == {"spo2": 3}  # the heart rate is 10 s old: stale
    detail = orjson.loads(s.detail())
    assert detail["partial"] and detail["used"] == {"spo2": [3, 1]}
    assert "heart_rate" in detail["missing"] and detail["red"]


def test_scale_2_on_oxygen_scores_high_saturation() -> None:
    on_o2 = latest(scale=2, spo2=97, supplemental_o2=1)
    on_air = latest(scale=2, spo2=97, supplemental_o2=0)
    assert news2.score(on_o2, 0, 2, 1000).points == {"spo2": 3, "supplemental_o2": 2}
    assert news2.score(on_air, 0, 2, 1000).points == {"spo2": 0, "supplemental_o2": 0}
    scale_1 = latest(scale=1, spo2=97, supplemental_o2=1)
    assert news2.score(scale_1, 0, 1, 1000).points == {"spo2": 0, "supplemental_o2": 2}


values = {
    "resp_rate": st.integers(4, 40),
    "spo2": st.integers(80, 100),
    "supplemental_o2": st.sampled_from([0, 1]),
    "systolic_bp": st.integers(70, 230),
    "heart_rate": st.integers(30, 150),
    "consciousness": st.sampled_from([0, 1, 2, 3, 4]),
    "body_temp": st.floats(34, 41).map(lambda v: round(v, 1)),
}


@given(
    st.fixed_dictionaries(
        {}, optional={p: st.tuples(st.integers(0, 2_000), v) for p, v in values.items()}
    ),
    st.sampled_from([1, 2]),
)
def test_the_per_reading_tally_is_the_score_of_the_record(
    entries: dict[str, tuple[int, float]], scale: int
) -> None:
    """Each value is scored once, when it arrives (SpO2 both on air and on oxygen): the
    tally every reading runs sums what the whole score says, and that is the chart's."""
    latest = tuple(
        news2.entry(p, *entries[p], scale) if p in entries else None for p in news2.PARAMETERS
    )
    at, staleness = 2_000, 1_000
    total, red, used = news2.tally(latest, at, staleness)
    s = news2.score(latest, at, scale, staleness)
    fresh = {p: v for p, (t, v) in entries.items() if at - t <= staleness}
    assert set(s.points) == set(fresh)
    assert used == sum(1 << news2.INDEX[p] for p in fresh)
    assert (total, red) == (sum(s.points.values()), 3 in s.points.values())
    on_o2 = fresh.get("supplemental_o2") == 1
    for p, v in fresh.items():
        own = news2.spo2_points(v, scale, on_o2) if p == "spo2" else news2.POINTS[p](v)
        assert s.points[p] == own


def test_the_score_log_forgets_oldest_first_and_a_late_record_with_the_newer() -> None:
    log = news2.ScoreLog()
    sig = (1, "low", 1)
    for t in (10, 20, 30):
        log.add(t, sig)
    log.add(15, sig)  # a recompute after late data recorded behind 30
    log.add(20, (0, "zero", 1))  # corrected where one was: no second place in the order
    log.prune(20)
    assert [log.get(t) for t in (10, 15, 20, 30)] == [None, sig, (0, "zero", 1), sig]
    log.prune(31)
    assert [log.get(t) for t in (15, 20, 30)] == [None, None, None]


# --- episodes on the engine ---------------------------------------------------------------

T0 = 1_800_000_000_000


def feed(e: Engine, t_s: float, patient: str = "p-1", **values: float) -> list[Detection]:
    t = T0 + round(t_s * 1000)
    readings = tuple(Reading(m, t, v, "") for m, v in values.items())
    return e.feed("p0", Upload("u", "gw", "d-1", patient, t, readings), now=t)


def news2_only(**fields: object) -> Engine:
    doc = {
        "version": 1,
        "defaults": {
            "news2": {
                "kind": "news2", "spo2_scale": 1, "staleness_s": 3600.0, "min_parameters": 2,
                "for_s": 60.0, "clear_for_s": 120.0, "medium_clear_score": 3.0,
                "high_clear_score": 5.0, **fields,
            }
        },
        "cohorts": {"copd": {"news2": {"spo2_scale": 2}}},
        "patients": {"p-copd": {"cohort": "copd"}},
    }  # fmt: skip
    return Engine(parse_rules(doc, source="test"))


def test_medium_opens_after_persistence_escalates_to_high_and_resolves_downwards() -> None:
    e = news2_only()
    assert feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5) == []  # 5: medium
    assert feed(e, 59, heart_rate=116) == []
    [opened] = feed(e, 60, heart_rate=117)
    assert (opened.rule, opened.state, opened.severity) == ("news2_medium", "opened", "medium")
    assert opened.metric is None and opened.value == 5
    detail = orjson.loads(opened.detail)
    assert detail["band"] == "medium" and detail["partial"]
    assert sorted(detail["used"]) == ["body_temp", "heart_rate", "resp_rate"]
    assert detail["used"]["body_temp"] == [1, 60]  # one point, measured 60 s before
    # Worse: 7 -> a high episode opens inside the medium one (escalation upwards only).
    assert feed(e, 100, resp_rate=26, body_temp=39.2) == []  # 2 + 3 + 2 = 7
    [high] = feed(e, 160, resp_rate=26)
    assert (high.rule, high.severity, high.value) == ("news2_high", "high", 7)
    assert high.episode_start == T0 + 100_000
    # Back to 5 (= high_clear_score): the high episode resolves after its clear delay;
    # medium stays open (5 is still medium).
    assert feed(e, 200, resp_rate=21, body_temp=38.5) == []
    [down] = feed(e, 320, resp_rate=21)
    assert (down.rule, down.state) == ("news2_high", "resolved")
    assert feed(e, 400, heart_rate=80, body_temp=37) == []  # 0: clear run starts
    [resolved] = feed(e, 520, heart_rate=80)
    assert (resolved.rule, resolved.state) == ("news2_medium", "resolved")
    assert resolved.alert_id == opened.alert_id


def test_a_single_red_parameter_opens_a_medium_episode() -> None:
    e = news2_only(for_s=0.0)
    [opened] = feed(e, 0, heart_rate=70, consciousness=2)  # total 3, red
    assert opened.rule == "news2_medium" and orjson.loads(opened.detail)["red"]


# --- the persistence tolerates brief dips below the band (dip_s) ------------------------------
# Score 5 at 0 s (HR 115: 2, RR 22: 2, 38.5 degC: 1); HR 100 scores 1, so the total is 4.


def test_without_dip_s_one_reading_below_the_band_restarts_the_persistence() -> None:
    e = news2_only()
    assert feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5) == []
    assert feed(e, 20, heart_rate=100) == []  # 4: the run breaks
    assert feed(e, 25, heart_rate=116) == []  # 5: a new run from 25 s
    assert feed(e, 60, heart_rate=117) == []
    [opened] = feed(e, 85, heart_rate=117)
    assert (opened.rule, opened.episode_start, opened.at) == (
        "news2_medium",
        T0 + 25_000,
        T0 + 85_000,
    )


def test_dips_totalling_less_than_dip_s_keep_the_persistence_clock() -> None:
    e = news2_only(dip_s=30.0)
    assert feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5) == []
    assert feed(e, 20, heart_rate=100) == []  # the dip starts ...
    assert feed(e, 35, heart_rate=100) == []
    assert feed(e, 49.999, heart_rate=116) == []  # ... and lasted 29.999 s: bridged
    [opened] = feed(e, 60, heart_rate=117)  # 60 s from the run's first reading, dip included
    assert (opened.rule, opened.episode_start, opened.at) == ("news2_medium", T0, T0 + 60_000)
    assert opened.value == 5  # the dip's 4 is not the episode's value


def test_a_dip_of_dip_s_or_longer_breaks_the_run() -> None:
    # Back in the band exactly dip_s after the dip began: a new run from there.
    e = news2_only(dip_s=30.0)
    feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5)
    feed(e, 20, heart_rate=100)
    assert feed(e, 50, heart_rate=116) == []
    assert feed(e, 60, heart_rate=117) == []
    [opened] = feed(e, 110, heart_rate=117)
    assert (opened.episode_start, opened.at) == (T0 + 50_000, T0 + 110_000)
    # Still below the band dip_s after the dip began: the run is over there and then.
    e = news2_only(dip_s=30.0)
    feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5)
    feed(e, 20, heart_rate=100)
    feed(e, 50, heart_rate=100)
    assert feed(e, 55, heart_rate=116) == []
    assert feed(e, 60, heart_rate=116) == []
    [opened] = feed(e, 115, heart_rate=117)
    assert opened.episode_start == T0 + 55_000


def test_the_dips_of_one_run_add_up_against_dip_s() -> None:
    # Two dips of 15 s each (20-35 s, 40-55 s) total 30 s = dip_s: the run breaks at the
    # second dip's end, and a new one starts there. A score in the band only now and then
    # is not sustained.
    e = news2_only(dip_s=30.0)
    feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5)
    feed(e, 20, heart_rate=100)
    feed(e, 35, heart_rate=116)
    feed(e, 40, heart_rate=100)
    assert feed(e, 55, heart_rate=116) == []
    assert feed(e, 60, heart_rate=116) == []
    [opened] = feed(e, 115, heart_rate=116)
    assert (opened.episode_start, opened.at) == (T0 + 55_000, T0 + 115_000)
    # One second less of dipping: bridged, the episode opens 60 s after the run began.
    e = news2_only(dip_s=30.0)
    feed(e, 0, heart_rate=115, resp_rate=22, body_temp=38.5)
    feed(e, 20, heart_rate=100)
    feed(e, 35, heart_rate=116)
    feed(e, 40, heart_rate=100)
    assert feed(e, 54, heart_rate=116) == []
    [opened] = feed(e, 60, heart_rate=116)
    assert (opened.episode_start, opened.at) == (T0, T0 + 60_000)


def test_a_dip_before_the_band_was_ever_reached_is_no_run() -> None:
    e = news2_only(dip_s=30.0)
    assert feed(e, 0, heart_rate=100, resp_rate=22, body_temp=38.5) == []  # 4
    assert feed(e, 10, heart_rate=116) == []  # 5: the run starts here, not at 0 s
    assert feed(e, 69, heart_rate=116) == []
    [opened] = feed(e, 70, heart_rate=116)
    assert opened.episode_start == T0 + 10_000


def test_too_few_parameters_give_no_score() -> None:
    e = news2_only(for_s=0.0)
    assert feed(e, 0, heart_rate=150) == []  # one parameter: below min_parameters
    assert [d.rule for d in feed(e, 1, resp_rate=16)] == ["news2_medium"]  # red pulse


def test_scale_2_applies_to_the_cohort_only() -> None:
    e = news2_only(for_s=0.0)
    # SpO2 86 %: scale 1 -> 3 (red); scale 2 -> 1.
    assert [d.rule for d in feed(e, 0, spo2=86, heart_rate=70)] == ["news2_medium"]
    assert feed(e, 0, patient="p-copd", spo2=86, heart_rate=70) == []


def test_the_built_in_rules_carry_news2_with_the_copd_cohort_on_scale_2() -> None:
    rules = rules_from_settings(Settings())
    assert rules.defaults.news2 is not None and rules.defaults.news2.spo2_scale == 1
    assert rules.defaults.news2.dip_ms == 60_000  # respiration's 30 s fit in a dip
    copd = rules.cohorts["copd"].news2
    assert copd is not None and copd.spo2_scale == 2


# --- restart and disorder (the shared mechanism's guarantees hold for NEWS2) -----------------

VITALS = st.fixed_dictionaries(
    {},
    optional={
        "heart_rate": st.sampled_from([45.0, 70.0, 95.0, 120.0, 135.0]),
        "resp_rate": st.sampled_from([10.0, 16.0, 22.0, 26.0]),
        "body_temp": st.sampled_from([35.0, 37.0, 38.5, 39.5]),
        "consciousness": st.sampled_from([0.0, 0.0, 2.0]),
    },
)


def news2_uploads(steps: list[dict[str, float]]) -> list[Upload]:
    out = []
    for i, values in enumerate(steps):
        t = T0 + i * 30_000
        readings = tuple(Reading(m, t, v, "") for m, v in values.items())
        out.append(Upload(f"u{i}", "gw", "d-1", "p-1", t, readings))
    return [u for u in out if u.readings]


def feed_uploads(e: Engine, uploads: list[Upload]) -> list[Detection]:
    return [d for u in uploads for d in e.feed("p0", u, now=u.received)]


@pytest.mark.parametrize("dip_s", [0.0, 45.0])
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(VITALS, min_size=1, max_size=40), data=st.data())
def test_silent_replay_then_live_equals_never_stopping(
    dip_s: float, steps: list[dict[str, float]], data: st.DataObject
) -> None:
    uploads = news2_uploads(steps)
    committed = data.draw(st.integers(0, len(uploads)))
    never_stopped = news2_only(dip_s=dip_s)
    feed_uploads(never_stopped, uploads[:committed])
    expected = feed_uploads(never_stopped, uploads[committed:])
    restarted = news2_only(dip_s=dip_s)
    feed_uploads(restarted, uploads[:committed])
    assert feed_uploads(restarted, uploads[committed:]) == expected


@pytest.mark.parametrize("dip_s", [0.0, 45.0])
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(VITALS, min_size=1, max_size=40), data=st.data())
def test_a_backlog_in_any_order_gives_the_detections_of_ordered_input(
    dip_s: float, steps: list[dict[str, float]], data: st.DataObject
) -> None:
    uploads = news2_uploads(steps)
    readings = [r for u in uploads for r in u.readings]
    last = T0 + len(steps) * 30_000
    ordered = Upload("u", "gw", "d-1", "p-1", last, tuple(readings))
    shuffled = Upload("u", "gw", "d-1", "p-1", last, tuple(data.draw(st.permutations(readings))))
    in_order = feed_uploads(news2_only(dip_s=dip_s), [ordered])
    assert feed_uploads(news2_only(dip_s=dip_s), [shuffled]) == in_order


# --- score records (vitals.news2) ---------------------------------------------------------


def scored(e: Engine, uploads: list[Upload]) -> list[News2Score]:
    out: list[News2Score] = []
    for u in uploads:
        e.feed("p0", u, now=u.received, scores=out)
    return out


def at(t_s: float, **values: float) -> Upload:
    t = T0 + round(t_s * 1000)
    return Upload(
        "u", "gw", "d-1", "p-1", t, tuple(Reading(m, t, v, "") for m, v in values.items())
    )


def test_a_score_record_is_published_only_when_total_band_or_parameters_change() -> None:
    records = scored(
        news2_only(),
        [
            at(0, heart_rate=70),  # one parameter: below min_parameters, no score
            at(10, resp_rate=16),  # 0, zero, {heart_rate, resp_rate}
            at(20, heart_rate=72),  # same score, same parameters: nothing
            at(30, body_temp=37.0),  # a third parameter: same total, new set
            at(40, heart_rate=115),  # 2: low
            at(50, heart_rate=116, resp_rate=16),  # unchanged
        ],
    )
    assert [(r.t - T0, r.news2, r.band, sorted(r.parameters)) for r in records] == [
        (10_000, 0, "zero", ["heart_rate", "resp_rate"]),
        (30_000, 0, "zero", ["body_temp", "heart_rate", "resp_rate"]),
        (40_000, 2, "low", ["body_temp", "heart_rate", "resp_rate"]),
    ]
    last = records[-1]
    assert last.patient_id == "p-1" and last.partial and last.scale == 1 and not last.red
    assert last.parameters["heart_rate"] == ScoredParameter(2, 115.0, 0)
    assert last.parameters["body_temp"] == ScoredParameter(0, 37.0, 10_000)  # measured 10 s before
    assert last.computed == T0 + 40_000


def test_score_records_are_left_out_when_not_asked_for() -> None:
    e = news2_only()
    assert scored(e, [at(0, heart_rate=70, resp_rate=16)]) != []
    e.feed("p0", at(10, heart_rate=130), now=T0)  # no list: nothing kept for later
    assert scored(e, [at(20, heart_rate=130)]) == []  # 130 -> 2 was already recorded


def _stored_at(records: list[News2Score], times: list[int]) -> list[tuple[object, ...] | None]:
    """What the sink's table answers (latest row at or before t) at each time."""
    table: dict[int, News2Score] = {}
    for r in records:  # ON CONFLICT (patient_id, t) DO UPDATE: the last write wins
        table[r.t] = r
    answers = []
    for t in times:
        before = [table[k] for k in sorted(table) if k <= t]
        answers.append(
            (before[-1].news2, before[-1].band, sorted(before[-1].parameters)) if before else None
        )
    return answers


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(VITALS, min_size=1, max_size=40), data=st.data())
def test_stored_scores_after_late_uploads_answer_as_for_ordered_input(
    steps: list[dict[str, float]], data: st.DataObject
) -> None:
    uploads = news2_uploads(steps)
    times = sorted({r.t for u in uploads for r in u.readings})
    ordered = scored(news2_only(), uploads)
    shuffled = data.draw(st.permutations(uploads))
    late = scored(news2_only(), list(shuffled))

    assert _stored_at(late, times) == _stored_at(ordered, times)
    # In order, every record is a change: never more records than readings.
    assert len(ordered) <= sum(len(u.readings) for u in uploads)
    assert all(
        (a.news2, a.band, set(a.parameters)) != (b.news2, b.band, set(b.parameters))
        for a, b in zip(ordered, ordered[1:], strict=False)
    )


def test_a_late_reading_that_changes_nothing_repeats_no_record() -> None:
    e = news2_only()
    first = scored(
        e, [at(0, heart_rate=70, resp_rate=16), at(10, heart_rate=115), at(20, heart_rate=70)]
    )
    assert [(r.t - T0, r.news2) for r in first] == [(0, 0), (10_000, 2), (20_000, 0)]
    # Heart rate 72 at 5 s scores as 70 did: the recompute from there finds the recorded
    # changes at 10 s and 20 s unchanged.
    assert scored(e, [at(5, heart_rate=72)]) == []
    # Heart rate 135 at 15 s is a new change (3), recorded; 20 s stays a change to 0, as
    # recorded: not repeated.
    moved = scored(e, [at(15, heart_rate=135)])
    assert [(r.t - T0, r.news2) for r in moved] == [(15_000, 3)]


def test_a_score_record_round_trips_and_malformed_ones_are_contract_errors() -> None:
    [record] = scored(news2_only(), [at(0, heart_rate=135, resp_rate=16)])
    raw = encode_news2_score(record)
    assert decode_news2_score(raw) == record
    doc = orjson.loads(raw)
    bad_parameter = {"heart_rate": {"points": 4, "value": 135.0, "age_ms": 0}}
    for change in (
        {"v": 2},
        {"patient_id": ""},
        {"t": 1.5},
        {"news2": 21},
        {"band": "severe"},
        {"red": 1},
        {"scale": 3},
        {"parameters": {}},
        {"parameters": []},
        {"parameters": bad_parameter},
        {"parameters": {"heart_rate": {"points": 3, "value": "high", "age_ms": 0}}},
        {"parameters": {"heart_rate": {"points": 3, "value": 135.0}}},
        {"computed": None},
    ):
        with pytest.raises(ContractError):
            decode_news2_score(orjson.dumps({**doc, **change}))
    with pytest.raises(ContractError):
        decode_news2_score(b"[]")


def test_score_records_are_a_small_fraction_of_a_simulated_fleets_readings() -> None:
    """Wearables every 5 s, respiration every 30 s, temperature every 10 min (vitals
    simulate): records come with changes, not with readings."""
    engine = Engine(rules_from_settings(Settings()))
    fleet = [Patient(i, seed=7) for i in range(4)]
    readings, records = 0, []
    for minute in range(120):
        lo, hi = T0 + minute * 60_000, T0 + (minute + 1) * 60_000
        for p in fleet:
            batch = tuple(
                Reading(r["metric"], to_ms(datetime.fromisoformat(r["t"])), *_canonical(r))
                for r in p.readings(lo, hi, 5_000, [])
            )
            readings += len(batch)
            engine.feed("p0", Upload("u", "gw", p.device_id, p.patient_id, hi, batch), now=hi,
                        scores=records)  # fmt: skip
    assert readings > 10_000
    assert 0 < len(records) < readings / 50, (len(records), readings)


def _canonical(r: dict[str, Any]) -> tuple[float, str]:
    if r["unit"] == "[degF]":  # as the gateway converts it
        return (r["v"] - 32) * 5 / 9, "Cel"
    return float(r["v"]), r["unit"]

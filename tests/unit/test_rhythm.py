"""Rhythm irregularity (Dash 2009): window features, artefacts, persistence, replay, order."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.rhythm_validation import evaluate, pyhrv_nsr, synthetic_af, verdicts
from processors.engine import Engine
from processors.rhythm import RhythmRule, RhythmState, RhythmTrack, features, irregular, judge
from processors.rules import DEFAULT_RULES_FILE, parse_rules, rules_from_settings
from processors.windows import Sample
from vitals.contract import Detection, Reading, Upload
from vitals.errors import ConfigError
from vitals.settings import Settings
from vitalsctl import cli

T0 = 1_800_000_000_000
RULES = rules_from_settings(Settings())
RULE: RhythmRule = RULES.defaults.rhythm  # type: ignore[assignment]


def test_the_real_normal_sinus_rhythm_has_no_irregular_window() -> None:
    found = verdicts(pyhrv_nsr(), RULE)
    assert len(found) == 36 and not any(found)


def test_synthetic_af_windows_are_irregular() -> None:
    found = [v for seed in range(5) for v in verdicts(synthetic_af(seed, 640), RULE)]
    assert sum(1 for v in found if v) >= 0.95 * len(found)


def test_bigeminy_is_rejected_by_the_turning_point_ratio() -> None:
    rr = [600.0 if i % 2 else 1000.0 for i in range(128)]
    f = features(rr, RULE.trim_beats)
    assert f.rmssd > RULE.rmssd_min and f.tpr > RULE.tpr_max and not irregular(f, RULE)


def test_trigeminy_is_rejected_by_entropy() -> None:
    rng = random.Random(1)
    rr = [[800.0, 560.0, 1040.0][i % 3] + rng.uniform(-5, 5) for i in range(128)]
    f = features(rr, RULE.trim_beats)
    assert RULE.tpr_min <= f.tpr <= RULE.tpr_max  # looks random by turning points alone
    assert f.entropy < RULE.entropy_min and not irregular(f, RULE)


def test_isolated_ectopic_beats_are_trimmed_away() -> None:
    rng = random.Random(2)
    rr = [800.0 + rng.uniform(-15, 15) for _ in range(128)]
    for i in (20, 60, 100):  # a PVC and its compensatory pause, three times
        rr[i], rr[i + 1] = 480.0, 1120.0
    assert features(rr, RULE.trim_beats).rmssd < RULE.rmssd_min


def test_a_window_with_too_many_artefacts_is_unreadable() -> None:
    af = synthetic_af(7, 128)
    assert judge(af, 13, RULE) is None  # 13 > 10 % of 128
    assert judge(af, 12, RULE) is True and judge(af, 0, RULE) is True


def run_track(rr: list[tuple[int, float]]) -> RhythmState:
    track = RhythmTrack(RULE)
    state = track.initial
    for t, v in rr:
        state = track.advance(state, Sample(t, "d", v, "rr_interval"))
    return state


def test_implausible_intervals_are_left_out_and_counted() -> None:
    beats = [(T0 + i * 800, 800.0) for i in range(100)] + [(T0 + 80_100, 100.0)]
    state = run_track(beats)
    assert (state.count, state.artefacts) == (100, 1)


def test_a_gap_between_beats_starts_a_new_window() -> None:
    first = [(T0 + i * 800, 800.0) for i in range(100)]
    after_gap = [(T0 + 200_000 + i * 800, 800.0) for i in range(50)]
    state = run_track(first + after_gap)
    assert (state.count, state.judged) == (50, 0)


# --- episodes on the engine -------------------------------------------------------------------


def uploads_of(rr: list[float], patient: str = "p-1", per_upload: int = 64) -> list[Upload]:
    t = T0
    out = []
    for start in range(0, len(rr), per_upload):
        readings = []
        for v in rr[start : start + per_upload]:
            t += round(v)
            readings.append(Reading("rr_interval", t, v, "ms"))
        out.append(Upload(f"u-{start}", "gw", "d", patient, t, tuple(readings)))
    return out


def feed_all(e: Engine, uploads: list[Upload]) -> list[Detection]:
    return [d for u in uploads for d in e.feed("p0", u, now=u.received)]


def regular(beats: int, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [800.0 + rng.uniform(-10, 10) for _ in range(beats)]


def test_five_irregular_windows_of_six_open_and_six_regular_ones_resolve() -> None:
    e = Engine(RULES)
    af = synthetic_af(11, 128 * 6)
    assert all(verdicts(af, RULE))  # every window irregular, for the count below
    found = feed_all(e, uploads_of(regular(128 * 2) + af[: 128 * 4]))
    assert found == []  # four irregular windows: not yet
    rr = regular(128 * 2) + af[: 128 * 5]
    e = Engine(RULES)
    [opened] = feed_all(e, uploads_of(rr))
    assert (opened.rule, opened.state, opened.severity) == ("rhythm_irregular", "opened", "medium")
    assert opened.value == 5 and opened.metric == "rr_interval"
    # Back to sinus rhythm: resolved once six windows in a row were regular.
    e = Engine(RULES)
    found = feed_all(e, uploads_of(rr + regular(128 * 6, seed=4)))
    assert [d.state for d in found] == ["opened", "resolved"]
    assert found[0].alert_id == found[1].alert_id


# --- restart and arrival order (the guarantees of the shared mechanism) ---------------------

SEGMENTS = st.lists(st.sampled_from(["af", "sinus"]), min_size=2, max_size=14)


def stream(kinds: list[str], seed: int) -> list[float]:
    rr: list[float] = []
    for i, kind in enumerate(kinds):
        rr += synthetic_af(seed + i, 128) if kind == "af" else regular(128, seed + i)
    return rr


@settings(max_examples=40, deadline=None)
@given(kinds=SEGMENTS, seed=st.integers(0, 1000), data=st.data())
def test_silent_replay_then_live_equals_never_stopping(
    kinds: list[str], seed: int, data: st.DataObject
) -> None:
    uploads = uploads_of(stream(kinds, seed))
    committed = data.draw(st.integers(0, len(uploads)))
    never_stopped = Engine(RULES)
    feed_all(never_stopped, uploads[:committed])
    expected = feed_all(never_stopped, uploads[committed:])
    restarted = Engine(RULES)
    feed_all(restarted, uploads[:committed])  # silent: published before the restart
    assert feed_all(restarted, uploads[committed:]) == expected


@settings(max_examples=40, deadline=None)
@given(kinds=SEGMENTS, seed=st.integers(0, 1000), data=st.data())
def test_disorder_within_uploads_and_across_patients_changes_nothing(
    kinds: list[str], seed: int, data: st.DataObject
) -> None:
    rr = stream(kinds, seed)
    alone = feed_all(Engine(RULES), uploads_of(rr, "p-a"))
    other = feed_all(Engine(RULES), uploads_of(rr[::-1], "p-b"))

    def shuffled(u: Upload) -> Upload:
        readings = tuple(data.draw(st.permutations(u.readings)))
        return Upload(u.upload_id, u.gateway_id, u.device_id, u.patient_id, u.received, readings)

    a = [shuffled(u) for u in uploads_of(rr, "p-a")]
    b = [shuffled(u) for u in uploads_of(rr[::-1], "p-b")]
    picks = data.draw(st.permutations([0] * len(a) + [1] * len(b)))
    queues = [iter(a), iter(b)]
    together = feed_all(Engine(RULES), [next(queues[p]) for p in picks])
    assert [d for d in together if d.patient_id == "p-a"] == alone
    assert [d for d in together if d.patient_id == "p-b"] == other


@settings(max_examples=40, deadline=None)
@given(kinds=SEGMENTS, seed=st.integers(0, 1000), data=st.data())
def test_a_backlog_in_any_order_gives_the_detections_of_ordered_input(
    kinds: list[str], seed: int, data: st.DataObject
) -> None:
    """A gateway's backlog whose tachograms come in any order within one upload: the
    window sorts them by event time, so the detections are those of ordered input."""
    uploads = uploads_of(stream(kinds, seed), per_upload=len(stream(kinds, seed)))
    pieces = uploads_of(stream(kinds, seed))
    in_order = feed_all(Engine(RULES), uploads)
    order = data.draw(st.permutations(range(len(pieces))))
    merged = [r for i in order for r in pieces[i].readings]
    one = Upload("u", "gw", "d", "p-1", uploads[-1].received, tuple(merged))
    assert feed_all(Engine(RULES), [one]) == in_order


# --- the validation command -------------------------------------------------------------------


def test_validate_rhythm_meets_its_targets_and_writes_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rhythm.json"
    assert cli.main(["validate", "rhythm", "--out", str(out), "--af-series", "6"]) == 0
    figures = orjson.loads(out.read_bytes())
    assert figures["per_episode"]["false_episodes"] == 0  # real NSR and record 208
    assert figures["per_window"]["specificity"] == 100.0
    assert figures["per_window"]["sensitivity"] >= 95.0  # synthetic AF
    assert figures["per_window"]["negative_windows"] == 38  # 36 NSR + 2 of record 208
    printed = capsys.readouterr().out
    assert "per_window   sensitivity" in printed and "Tateno & Glass 2001" in printed


def test_validation_refuses_rules_without_the_rhythm_detector() -> None:
    doc = tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    doc["defaults"]["rhythm"]["enabled"] = False
    with pytest.raises(ConfigError, match="rhythm rule is disabled"):
        evaluate("x", regular(128), False, parse_rules(doc, source="t"))

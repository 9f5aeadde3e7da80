"""The rules file: defaults, cohort and patient overrides, and every refusal at start."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from processors.engine import Engine
from processors.rules import DEFAULT_RULES_FILE, parse_rules, rules_from_settings
from vitals.contract import Reading, Upload
from vitals.errors import ConfigError
from vitals.settings import Settings

T0 = 1_800_000_000_000


def default_doc() -> dict[str, Any]:
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    return tomllib.loads(text)


def with_patients(doc: dict[str, Any], patients: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["patients"] = patients
    return doc


def test_the_built_in_file_gives_the_documented_defaults() -> None:
    rules = rules_from_settings(Settings())
    spo2 = rules.for_metric("spo2")[0]
    hr = rules.for_metric("heart_rate")[0]
    assert (spo2.threshold, spo2.clear, spo2.for_ms, spo2.clear_for_ms) == (90, 92, 120_000, 60_000)
    assert (hr.threshold, hr.clear, hr.for_ms, hr.severity) == (130, 120, 300_000, "medium")
    assert rules.defaults.rhythm is not None and rules.defaults.rhythm.window_beats == 128
    assert rules.source == "built-in"


def test_environment_overrides_win_over_the_file_defaults() -> None:
    rules = rules_from_settings(Settings(hr_high_threshold=140, hr_high_clear=125, clear_for_s=10))
    hr = rules.for_metric("heart_rate")[0]
    assert (hr.threshold, hr.clear, hr.clear_for_ms) == (140, 125, 10_000)
    assert rules.for_metric("spo2")[0].clear_for_ms == 10_000


def test_a_cohort_and_a_patient_override_layer_field_by_field() -> None:
    doc = with_patients(
        default_doc(),
        {
            "p-copd": {"cohort": "copd"},
            "p-tachy": {"hr_high": {"threshold": 150.0, "clear": 140.0}},
            "p-both": {"cohort": "copd", "spo2_low": {"for_s": 300.0}},
        },
    )
    rules = parse_rules(doc, source="t")
    assert rules.for_metric("spo2", "p-copd")[0].threshold == 86
    assert rules.for_patient("p-copd").news2.spo2_scale == 2  # type: ignore[union-attr]
    tachy = rules.for_metric("heart_rate", "p-tachy")[0]
    assert (tachy.threshold, tachy.clear, tachy.for_ms) == (150, 140, 300_000)
    both = rules.for_metric("spo2", "p-both")[0]
    assert (both.threshold, both.clear, both.for_ms) == (86, 88, 300_000)
    assert rules.for_metric("spo2", "anyone-else")[0].threshold == 90


def test_a_known_resting_tachycardia_is_not_alerted_at_the_default_threshold() -> None:
    doc = with_patients(
        default_doc(), {"p-tachy": {"hr_high": {"threshold": 150.0, "clear": 140.0}}}
    )
    engine = Engine(parse_rules(doc, source="t"))

    def run(patient: str) -> list[str]:
        found = []
        for i in range(0, 40):
            t = T0 + i * 10_000
            upload = Upload("u", "gw", "d", patient, t, (Reading("heart_rate", t, 140, "/min"),))
            found += [d.rule for d in engine.feed("p0", upload, now=t)]
        return found

    assert run("p-other") == ["hr_high"]
    assert run("p-tachy") == []


def test_a_rules_file_is_read_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    path.write_text(text.replace("threshold = 130.0", "threshold = 135.0"), encoding="utf-8")
    rules = rules_from_settings(Settings(rules_file=str(path)))
    assert rules.for_metric("heart_rate")[0].threshold == 135 and rules.source == str(path)


def test_suppression_defaults_by_severity_and_overrides_per_patient() -> None:
    doc = default_doc()
    del doc["defaults"]["hr_high"]["suppress_s"], doc["defaults"]["spo2_low"]["suppress_s"]
    doc = with_patients(doc, {"p-1": {"hr_high": {"suppress_s": 60.0}}})
    rules = parse_rules(doc, source="t")
    # Absent from the file: 30 min below high severity, never for high.
    assert rules.for_metric("heart_rate")[0].suppress_ms == 1_800_000
    assert rules.for_metric("spo2")[0].suppress_ms == 0
    assert rules.for_metric("heart_rate", "p-1")[0].suppress_ms == 60_000
    assert rules.defaults.news2 is not None and rules.defaults.news2.suppress_ms == 1_800_000


def test_the_built_in_file_has_a_baseline_and_fault_rules_per_watched_metric() -> None:
    rules = rules_from_settings(Settings()).defaults
    assert {r.rule for r in rules.baselines} == {"hr_baseline", "resp_baseline", "spo2_baseline"}
    assert {r.rule for r in rules.flat_lines} == {"hr_flat", "spo2_flat"}
    assert {r.rule for r in rules.jumps} == {"hr_jump", "spo2_jump"}
    assert rules.watches("resp_rate") and not rules.watches("body_temp")


def test_a_disabled_rule_is_not_run() -> None:
    doc = with_patients(default_doc(), {"p-1": {"rhythm": {"enabled": False}}})
    rules = parse_rules(doc, source="t")
    assert rules.for_patient("p-1").rhythm is None and rules.defaults.rhythm is not None


# --- refusals: each names the entry and the field ------------------------------------------


def edit(path: str, value: Any) -> dict[str, Any]:
    """The default document with one value set (or deleted, for `...`) at a dotted path."""
    doc = default_doc()
    keys = path.split(".")
    node = doc
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("extra", 1, "extra: unknown section"),
        ("version", 2, "version: must be 1"),
        ("defaults", {}, "defaults: no rule defined"),
        ("defaults", [1], "defaults: must be a table"),
        ("defaults.spo2_low.kind", "magic", "defaults.spo2_low.kind: must be one of"),
        ("defaults.scores", {"kind": "news2"}, "defaults.scores: a news2 rule must be named"),
        ("defaults.spo2_low.threshold", "low", "defaults.spo2_low.threshold: must be float"),
        ("defaults.spo2_low.severity", 3, "defaults.spo2_low.severity: must be str"),
        ("defaults.spo2_low.enabled", 1, "defaults.spo2_low.enabled: must be bool"),
        ("defaults.spo2_low.for_s", -1.0, "defaults.spo2_low.for_s: must not be negative"),
        ("defaults.spo2_low.clear", float("nan"), "defaults.spo2_low.clear: must be finite"),
        ("defaults.spo2_low.colour", "red", "defaults.spo2_low.colour: unknown field"),
        ("defaults.spo2_low.clear", ..., "defaults.spo2_low.clear: missing"),
        ("defaults.spo2_low.metric", "spo3", "defaults.spo2_low.metric: unknown metric"),
        ("defaults.spo2_low.direction", "up", "defaults.spo2_low.direction: must be 'above'"),
        ("defaults.spo2_low.severity", "dire", "defaults.spo2_low.severity: unknown severity"),
        ("defaults.spo2_low.clear", 89.0, "defaults.spo2_low.clear: rule spo2_low: clear level"),
        ("defaults.news2.spo2_scale", 3, "defaults.news2.spo2_scale: must be 1 or 2"),
        ("defaults.news2.min_parameters", 0, "defaults.news2.min_parameters: must be 1 to 7"),
        ("defaults.news2.medium_clear_score", 5.0, "defaults.news2.medium_clear_score: must"),
        ("defaults.news2.high_clear_score", 7.0, "defaults.news2.high_clear_score: must"),
        ("defaults.news2.staleness_s", 0.0, "defaults.news2.staleness_s: must be positive"),
        ("defaults.rhythm.window_beats", 8, "defaults.rhythm.window_beats: must be at least"),
        ("defaults.rhythm.trim_beats", 60, "defaults.rhythm.trim_beats: must leave"),
        ("defaults.rhythm.tpr_max", 0.5, "defaults.rhythm.tpr_max: needs"),
        ("defaults.rhythm.max_rr_ms", 100.0, "defaults.rhythm.max_rr_ms: needs"),
        ("defaults.rhythm.max_artefact_fraction", 1.0, "max_artefact_fraction: must be in"),
        ("defaults.rhythm.windows_needed", 7, "defaults.rhythm.windows_needed: needs"),
        ("defaults.rhythm.severity", "dire", "defaults.rhythm.severity: unknown severity"),
        ("cohorts.copd", 3, "cohorts.copd: must be a table"),
        ("cohorts.copd.news2.spo2_scale", 4, "cohorts.copd.news2.spo2_scale: must be 1 or 2"),
        ("cohorts.copd.spo2_low.metric", "heart_rate", "cohorts.copd.spo2_low.metric: may only"),
        ("cohorts.copd.glucose_low", {"threshold": 3.0}, "cohorts.copd.glucose_low: unknown rule"),
        ("cohorts.copd.spo2_low.clear", 80.0, "cohorts.copd.spo2_low.clear: rule spo2_low"),
        ("patients.p-1.cohort", "asthma", "patients entry 1.cohort: unknown cohort 'asthma'"),
        ("patients.p-1.hr_high.clear", 131.0, "patients entry 1.hr_high.clear: rule hr_high"),
        # personal baselines, sensor faults, suppression (docs/detectors.md)
        ("defaults.hr_high.suppress_s", -1.0, "defaults.hr_high.suppress_s: must not be neg"),
        ("defaults.hr_baseline.metric", "pulse", "defaults.hr_baseline.metric: unknown metric"),
        ("defaults.hr_baseline.direction", "up", "defaults.hr_baseline.direction: must be"),
        ("defaults.hr_baseline.deviation_sd", 0.0, "hr_baseline.deviation_sd: must be positive"),
        ("defaults.hr_baseline.clear_sd", 4.0, "defaults.hr_baseline.clear_sd: must be in"),
        ("defaults.hr_baseline.level_tau_s", 14400.0, "hr_baseline.level_tau_s: must be posit"),
        ("defaults.hr_baseline.min_sd", 0.0, "defaults.hr_baseline.min_sd: must be positive"),
        ("defaults.hr_baseline.deviating_weight", 1.0, "hr_baseline.deviating_weight: must be"),
        ("defaults.hr_baseline.min_readings", 1, "hr_baseline.min_readings: must be at least 2"),
        ("defaults.hr_baseline.warmup_s", ..., "defaults.hr_baseline.warmup_s: missing"),
        ("defaults.hr_flat.for_s", 0.0, "defaults.hr_flat.for_s: must be positive"),
        ("defaults.hr_flat.min_readings", 1, "defaults.hr_flat.min_readings: must be at least"),
        ("defaults.hr_jump.max_change", 0.0, "defaults.hr_jump.max_change: must be positive"),
        ("defaults.hr_jump.within_s", 0.0, "defaults.hr_jump.within_s: must be positive"),
        ("defaults.hr_jump.for_s", 60.0, "defaults.hr_jump.for_s: must be below hold_s"),
        ("defaults.hr_jump.metric", "spo2", "spo2_jump.metric: spo2 already has the jump rule"),
        ("defaults.hr_jump.level_readings", 0, "hr_jump.level_readings: must be at least 1"),
        ("defaults.hr_jump.level_readings", ..., "defaults.hr_jump.level_readings: missing"),
        ("defaults.news2.dip_s", -1.0, "defaults.news2.dip_s: must not be negative"),
        ("defaults.news2.dip_s", "1m", "defaults.news2.dip_s: must be float"),
        ("defaults.hr_flat.dip_s", 10.0, "defaults.hr_flat.dip_s: unknown field"),
        ("defaults.rhythm.dip_s", 10.0, "defaults.rhythm.dip_s: unknown field"),
        ("cohorts.copd.hr_flat.metric", "spo2", "cohorts.copd.hr_flat.metric: may only be set"),
    ],
)
def test_a_bad_rule_is_refused_naming_where_it_is(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(edit(path, value), source="mine.toml")
    assert str(caught.value).startswith("rules file mine.toml: ")
    assert message in str(caught.value)


def test_a_patient_entry_is_named_by_position_never_by_id() -> None:
    doc = with_patients(
        default_doc(), {"p-ok": {}, "p-secret-42": {"hr_high": {"threshold": "high"}}}
    )
    with pytest.raises(ConfigError, match="patients entry 2.hr_high.threshold") as caught:
        parse_rules(doc, source="t")
    assert "p-secret-42" not in str(caught.value)


def test_an_unreadable_or_malformed_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: cannot read it"):
        rules_from_settings(Settings(rules_file=str(missing)))
    broken = tmp_path / "broken.toml"
    broken.write_text("[defaults\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        rules_from_settings(Settings(rules_file=str(broken)))

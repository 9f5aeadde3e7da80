"""The escalation part of the rules file (vitals/rules_file.py): the setting as the default,
the file's [escalation] over it, a cohort's over that; bad entries refused by name."""

from __future__ import annotations

import tomllib

import pytest

from processors.rules import parse_rules
from vitals import rules_file
from vitals.errors import ConfigError
from vitals.rules_file import RulesDocument
from vitals.settings import parse_escalation

SETTING = parse_escalation("high:300,900;medium:900,2700")
BUILT_IN = rules_file.DEFAULT_RULES_FILE.read_text(encoding="utf-8")


def _doc(extra: str) -> RulesDocument:
    # Tables after the built-in file; a top-level key before its first table.
    text = BUILT_IN + "\n" + extra if extra.startswith("[") else extra + "\n" + BUILT_IN
    return RulesDocument(text, tomllib.loads(text), "test.toml")


def test_a_file_that_says_nothing_keeps_the_setting_for_everyone() -> None:
    plan = rules_file.escalation(rules_file.load(), SETTING)
    assert plan.default == SETTING
    assert plan.for_patient("p-1") == SETTING
    assert plan.cohorts["copd"] == SETTING  # the built-in copd cohort has no times of its own


def test_the_file_overrides_per_severity_and_a_cohort_over_the_file() -> None:
    plan = rules_file.escalation(
        _doc(
            "[escalation]\nmedium = [600]\nlow = []\n"
            '[cohorts.copd.escalation]\nhigh = [120, 600]\n[patients."p-c"]\ncohort = "copd"\n'
        ),
        SETTING,
    )
    assert plan.default == {"high": (300.0, 900.0), "medium": (600.0,), "low": ()}
    assert plan.for_patient("p-c") == {"high": (120.0, 600.0), "medium": (600.0,), "low": ()}
    assert plan.for_patient("p-other") == plan.default
    assert ("copd", "high", 1, 120.0) in plan.plan()
    assert ("", "high", 2, 900.0) in plan.plan()
    assert not [row for row in plan.plan() if row[1] == "low"]  # [] turns it off


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[escalation]\nurgent = [60]\n", "escalation.urgent: not a severity"),
        ('[escalation]\nhigh = "300"\n', "escalation.high: must be a list of seconds"),
        ("[escalation]\nhigh = [true]\n", "escalation.high: must be a list of seconds"),
        ("[escalation]\nhigh = [900, 300]\n", "escalation.high: delays must be finite, > 0"),
        ("[escalation]\nhigh = [0]\n", "escalation.high: delays must be finite, > 0"),
        ("[escalation]\nhigh = [inf]\n", "escalation.high: delays must be finite, > 0"),
        ("escalation = 5\n", "escalation: must be a table"),
        ("[cohorts.copd.escalation]\nhigh = [-1]\n", "cohorts.copd.escalation.high: delays"),
        ('[patients."p-9"]\ncohort = "asthma"\n', "patients entry 1.cohort: unknown cohort"),
    ],
)
def test_bad_escalation_entries_are_refused_by_name(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rules_file.escalation(_doc(extra), SETTING)
    assert str(caught.value).startswith("rules file test.toml: ")
    assert message in str(caught.value)
    assert "p-9" not in str(caught.value)  # patients by position only


def test_the_processors_accept_a_file_with_escalation_parts() -> None:
    doc = _doc("[escalation]\nhigh = [60]\n[cohorts.copd.escalation]\nhigh = [30]\n").doc
    rules = parse_rules(doc, source="test.toml")
    assert rules.cohorts["copd"].news2 is not None
    assert "escalation" in doc["cohorts"]["copd"]  # the caller's document is left as it was


def test_a_missing_or_broken_file_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read it"):
        rules_file.load(str(tmp_path / "none.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[escalation\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        rules_file.load(str(broken))

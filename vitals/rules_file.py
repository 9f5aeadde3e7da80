"""The rules file (TOML): read once per process, shared by the stages that use a part of it.

The processors build their detectors from it (processors/rules.py); the alerts sink reads
the escalation times (`[escalation]`, `[cohorts.<name>.escalation]`, and the cohort of
each `[patients."<id>"]`) for sinks/alerts/escalation.py. Stages may not import each
other, so the loading and the escalation part live here in the kernel; each stage checks
the part it uses and ignores the rest.

Escalation, later wins per severity: the `escalation` setting (VITALS_ESCALATION), the
file's `[escalation]`, the patient's cohort's `[cohorts.<name>.escalation]`. Each entry is
`severity = [seconds to level 1, to level 2, ...]`, positive and increasing; an empty
list turns escalation off for that severity.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitals.contract import SEVERITIES
from vitals.errors import ConfigError

# Shipped beside this module (package data).
DEFAULT_RULES_FILE = Path(__file__).with_name("rules.toml")

# severity -> seconds after the alert's publication at which levels 1, 2, ... are reached.
Delays = dict[str, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class RulesDocument:
    text: str
    doc: dict[str, Any]
    source: str  # the path, or "built-in": named in every error about the file


def load(path: str = "") -> RulesDocument:
    """The rules file at `path` (empty: the built-in one), parsed; ConfigError otherwise."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"rules file {path}: cannot read it ({exc.strerror})") from exc
        source = path
    else:
        text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
        source = "built-in"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {source}: not valid TOML: {exc}") from exc
    return RulesDocument(text, doc, source)


@dataclass(frozen=True, slots=True)
class Escalation:
    """Escalation times by cohort; `for_patient` says which apply to whom."""

    default: Delays
    cohorts: dict[str, Delays] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)  # patient -> cohort

    def plan(self) -> list[tuple[str, str, int, float]]:
        """(cohort, severity, level, seconds) rows; cohort "" is everyone else's."""
        every = {"": self.default, **self.cohorts}
        return [
            (cohort, severity, level, seconds)
            for cohort, delays in every.items()
            for severity, levels in delays.items()
            for level, seconds in enumerate(levels, 1)
        ]

    def for_patient(self, patient_id: str) -> Delays:
        cohort = self.patients.get(patient_id)
        return self.cohorts[cohort] if cohort is not None else self.default


def escalation(rules: RulesDocument, setting: Delays) -> Escalation:
    """The escalation part of `rules` over the `escalation` setting; ConfigError names the
    bad entry (patients by position, never by id: the message may reach a log)."""

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"rules file {rules.source}: {where}: {message}")

    doc = rules.doc
    default = {**setting, **_delays(doc.get("escalation", {}), "escalation", fail)}
    cohorts: dict[str, Delays] = {}
    cohort_tables = doc.get("cohorts", {})
    if not isinstance(cohort_tables, dict):
        raise fail("cohorts", "must be a table")
    for name, table in cohort_tables.items():
        own = table.get("escalation", {}) if isinstance(table, dict) else {}
        cohorts[name] = {**default, **_delays(own, f"cohorts.{name}.escalation", fail)}
    patients: dict[str, str] = {}
    patient_tables = doc.get("patients", {})
    for index, (patient, table) in enumerate(
        patient_tables.items() if isinstance(patient_tables, dict) else (), start=1
    ):
        cohort = table.get("cohort") if isinstance(table, dict) else None
        if cohort is None:
            continue
        if cohort not in cohorts:
            raise fail(f"patients entry {index}.cohort", f"unknown cohort {str(cohort)[:40]!r}")
        patients[patient] = cohort
    return Escalation(default, cohorts, patients)


def _delays(table: Any, where: str, fail: Any) -> Delays:
    if not isinstance(table, dict):
        raise fail(where, "must be a table of severity = [seconds, ...]")
    delays: Delays = {}
    for severity, levels in table.items():
        if severity not in SEVERITIES:
            raise fail(f"{where}.{severity}", f"not a severity (one of {', '.join(SEVERITIES)})")
        if not isinstance(levels, list) or not all(
            isinstance(s, int | float) and not isinstance(s, bool) for s in levels
        ):
            raise fail(f"{where}.{severity}", "must be a list of seconds, e.g. [300, 900]")
        try:
            delays[severity] = increasing_delays(levels)
        except ValueError as exc:
            raise fail(f"{where}.{severity}", str(exc)) from None
    return delays


def increasing_delays(levels: list[float] | tuple[float, ...]) -> tuple[float, ...]:
    """The levels' delays as floats; ValueError unless finite, > 0 and increasing."""
    values = tuple(float(s) for s in levels)
    if not all(math.isfinite(s) for s in values) or any(
        b <= a for a, b in zip((0.0, *values), values, strict=False)
    ):
        raise ValueError("delays must be finite, > 0 and increasing")
    return values

"""The detector configuration: a rules file (TOML) with defaults, cohorts and patients.

Loaded once at start and checked whole: a bad rule raises ConfigError naming where it is
(`defaults.hr_high.clear`, `cohorts.copd.news2.spo2_scale`, `patients entry 3.hr_high...`).
Patient entries are named by their position, never by id: the message may reach a log.

Layers, later wins field by field: the built-in defaults file (or `settings.rules_file`),
the `VITALS_SPO2_LOW_*`/`VITALS_HR_HIGH_*`/`VITALS_CLEAR_FOR_S` environment overrides of
the defaults, the patient's cohort, the patient's own entry. docs/detectors.md documents
every field and where each default comes from.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from processors.baseline import BaselineRule
from processors.faults import FlatLineRule, JumpRule
from processors.news2 import News2Rule
from processors.rhythm import RhythmRule
from processors.threshold import ThresholdRule
from vitals import rules_file
from vitals.catalog import METRICS
from vitals.contract import SEVERITIES
from vitals.errors import ConfigError
from vitals.settings import Settings

Table = dict[str, Any]

DEFAULT_RULES_FILE = rules_file.DEFAULT_RULES_FILE

# A repeat of a rule's episode within this long after the last one resolved is recorded
# but not paged, unless the rule sets `suppress_s`; never for high severity by default.
DEFAULT_SUPPRESS_S = {"low": 1800.0, "medium": 1800.0, "high": 0.0}

# Fields every kind accepts, with their type; `kind`, `metric`, `direction` are structural
# and only allowed under [defaults] (an override cannot turn spo2_low into a heart rule).
_FIELDS: dict[str, dict[str, type]] = {
    "threshold": {
        "metric": str,
        "direction": str,
        "threshold": float,
        "clear": float,
        "for_s": float,
        "clear_for_s": float,
        "severity": str,
        "suppress_s": float,
        "dip_s": float,
        "enabled": bool,
    },
    "news2": {
        "spo2_scale": int,
        "staleness_s": float,
        "min_parameters": int,
        "for_s": float,
        "clear_for_s": float,
        "medium_clear_score": float,
        "high_clear_score": float,
        "suppress_s": float,
        "dip_s": float,
        "enabled": bool,
    },
    "rhythm": {
        "window_beats": int,
        "trim_beats": int,
        "rmssd_min": float,
        "tpr_min": float,
        "tpr_max": float,
        "entropy_min": float,
        "min_rr_ms": float,
        "max_rr_ms": float,
        "max_artefact_fraction": float,
        "max_gap_s": float,
        "windows_needed": int,
        "windows_of": int,
        "severity": str,
        "suppress_s": float,
        "enabled": bool,
    },
    "baseline": {
        "metric": str,
        "direction": str,
        "deviation_sd": float,
        "clear_sd": float,
        "baseline_tau_s": float,
        "level_tau_s": float,
        "warmup_s": float,
        "min_readings": int,
        "min_sd": float,
        "deviating_weight": float,
        "for_s": float,
        "clear_for_s": float,
        "suppress_s": float,
        "dip_s": float,
        "enabled": bool,
    },
    "flat_line": {
        "metric": str,
        "for_s": float,
        "min_readings": int,
        "max_gap_s": float,
        "clear_for_s": float,
        "suppress_s": float,
        "enabled": bool,
    },
    "jump": {
        "metric": str,
        "max_change": float,
        "within_s": float,
        "level_readings": int,
        "hold_s": float,
        "for_s": float,
        "clear_for_s": float,
        "suppress_s": float,
        "dip_s": float,
        "enabled": bool,
    },
}
_OPTIONAL = ("enabled", "suppress_s", "dip_s")
# One rule of these kinds per patient: they are named after their kind.
_SINGLE = ("news2", "rhythm")
_STRUCTURAL = ("kind", "metric", "direction")

# Environment overrides of the defaults (Settings field -> rule, field).
_ENV = {
    "spo2_low_threshold": ("spo2_low", "threshold"),
    "spo2_low_clear": ("spo2_low", "clear"),
    "spo2_low_for_s": ("spo2_low", "for_s"),
    "hr_high_threshold": ("hr_high", "threshold"),
    "hr_high_clear": ("hr_high", "clear"),
    "hr_high_for_s": ("hr_high", "for_s"),
}


@dataclass(frozen=True, slots=True)
class PatientRules:
    """The rules in force for one patient (the defaults, a cohort's, or a patient's own)."""

    thresholds: tuple[ThresholdRule, ...]
    news2: News2Rule | None
    rhythm: RhythmRule | None
    flat_lines: tuple[FlatLineRule, ...] = ()
    jumps: tuple[JumpRule, ...] = ()
    baselines: tuple[BaselineRule, ...] = ()
    _by_metric: dict[str, tuple[ThresholdRule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_metric: dict[str, tuple[ThresholdRule, ...]] = {}
        for rule in self.thresholds:
            by_metric[rule.metric] = (*by_metric.get(rule.metric, ()), rule)
        object.__setattr__(self, "_by_metric", by_metric)

    def for_metric(self, metric: str) -> tuple[ThresholdRule, ...]:
        return self._by_metric.get(metric, ())

    def flat_line(self, metric: str) -> FlatLineRule | None:
        return next((r for r in self.flat_lines if r.metric == metric), None)

    def jump(self, metric: str) -> JumpRule | None:
        return next((r for r in self.jumps if r.metric == metric), None)

    def baseline(self, metric: str) -> BaselineRule | None:
        return next((r for r in self.baselines if r.metric == metric), None)

    def watches(self, metric: str) -> bool:
        """Some rule of the metric's own series (thresholds, faults, baseline) runs."""
        return bool(
            self.for_metric(metric)
            or self.flat_line(metric)
            or self.jump(metric)
            or self.baseline(metric)
        )

    @property
    def longest_window_ms(self) -> int:
        # Baselines and flat runs are carried in the windows' state and not replayed whole
        # (docs/detectors.md, personal baselines): as tracks.MetricTrack.span_ms.
        # A pending run reaches back its persistence plus the dips it bridged.
        spans = [max(r.for_ms + r.dip_ms, r.clear_for_ms) for r in self.thresholds]
        spans += [max(r.for_ms + r.dip_ms, r.clear_for_ms, r.hold_ms) for r in self.jumps]
        if self.news2 is not None:
            spans.append(self.news2.span_ms)
        if self.rhythm is not None:
            spans.append(self.rhythm.span_ms)
        return max(spans, default=0)


@dataclass(frozen=True, slots=True)
class Rules:
    defaults: PatientRules
    silence_after_ms: int
    lateness_ms: int
    cohorts: dict[str, PatientRules] = field(default_factory=dict)
    patients: dict[str, PatientRules] = field(default_factory=dict)
    source: str = "built-in"
    # sha-256 of what the rules were made from (file text, overrides, silence, lateness):
    # a checkpoint written under other rules is not restored (checkpoint.py).
    fingerprint: bytes = bytes(32)

    def for_patient(self, patient_id: str) -> PatientRules:
        return self.patients.get(patient_id, self.defaults)

    def for_metric(self, metric: str, patient_id: str = "") -> tuple[ThresholdRule, ...]:
        return self.for_patient(patient_id).for_metric(metric)

    @property
    def thresholds(self) -> tuple[ThresholdRule, ...]:
        return self.defaults.thresholds

    @property
    def longest_window_ms(self) -> int:
        """How far back in event time any detector of any patient looks."""
        every = [self.defaults, *self.cohorts.values(), *self.patients.values()]
        return max(p.longest_window_ms for p in every)

    @property
    def horizon_ms(self) -> int:
        """Event time a window holds, and wall time a restart replays."""
        return self.longest_window_ms + self.lateness_ms


def rules_from_settings(settings: Settings) -> Rules:
    """The processor's rules; raises ConfigError for a file or settings that cannot work."""
    rules_doc = rules_file.load(settings.rules_file)
    text, doc, source = rules_doc.text, rules_doc.doc, rules_doc.source
    if settings.silence_after_s <= 0:
        raise ConfigError("silence_after_s must be positive")
    if settings.silence_check_interval_s <= 0:
        raise ConfigError("silence_check_interval_s must be positive")
    env = _env_overrides(settings)
    silence_ms = _ms("silence_after_s", settings.silence_after_s)
    lateness_ms = _ms("allowed_lateness_s", settings.allowed_lateness_s)
    rules = parse_rules(
        doc, source=source, env=env, silence_after_ms=silence_ms, lateness_ms=lateness_ms
    )
    made_from = json.dumps([text, env, silence_ms, lateness_ms], sort_keys=True, default=str)
    return replace(rules, fingerprint=hashlib.sha256(made_from.encode()).digest())


def parse_rules(
    doc: Table,
    *,
    source: str,
    env: dict[str, Table] | None = None,
    silence_after_ms: int = 900_000,
    lateness_ms: int = 3_600_000,
) -> Rules:
    """Rules from a parsed rules document; ConfigError names the bad entry and field."""

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"rules file {source}: {where}: {message}")

    # `escalation` (also in a cohort) is the alerts sink's part: vitals/rules_file.py.
    unknown = set(doc) - {"version", "defaults", "cohorts", "patients", "escalation"}
    if unknown:
        raise fail(
            sorted(unknown)[0], "unknown section (expected defaults, cohorts, patients, escalation)"
        )
    if doc.get("version") != 1:
        raise fail("version", f"must be 1 (got {doc.get('version')!r})")
    defaults = _table(doc.get("defaults"), "defaults", fail)
    if not defaults:
        raise fail("defaults", "no rule defined")
    kinds: dict[str, str] = {}
    for name, raw in defaults.items():
        rule = _table(raw, f"defaults.{name}", fail)
        kind = rule.get("kind")
        if kind not in _FIELDS:
            raise fail(f"defaults.{name}.kind", f"must be one of {sorted(_FIELDS)} (got {kind!r})")
        if kind in _SINGLE and name != kind:
            raise fail(f"defaults.{name}", f"a {kind} rule must be named {kind!r}")
        kinds[name] = kind
    base: dict[str, Table] = {name: dict(raw) for name, raw in defaults.items()}
    for name, fields in (env or {}).items():
        base[name] = {**base.get(name, {}), **fields}

    def layered(layers: list[tuple[str, Table]]) -> PatientRules:
        merged = {name: dict(raw) for name, raw in base.items()}
        for where, overrides in layers:
            for name, raw in overrides.items():
                if name not in kinds:
                    raise fail(f"{where}.{name}", "unknown rule (not in [defaults])")
                table = _table(raw, f"{where}.{name}", fail)
                for key in table:
                    if key in _STRUCTURAL:
                        raise fail(f"{where}.{name}.{key}", "may only be set under [defaults]")
                merged[name].update(table)
        where = layers[-1][0] if layers else "defaults"
        return _build(merged, kinds, where, fail)

    built_defaults = layered([])
    cohorts: dict[str, PatientRules] = {}
    cohort_tables: dict[str, Table] = {}
    for cohort, raw in _table(doc.get("cohorts", {}), "cohorts", fail).items():
        table = _table(raw, f"cohorts.{cohort}", fail)
        cohort_tables[cohort] = {k: v for k, v in table.items() if k != "escalation"}
        cohorts[cohort] = layered([(f"cohorts.{cohort}", cohort_tables[cohort])])
    patients: dict[str, PatientRules] = {}
    for index, (patient, raw) in enumerate(
        _table(doc.get("patients", {}), "patients", fail).items(), start=1
    ):
        where = f"patients entry {index}"
        table = dict(_table(raw, where, fail))
        cohort = table.pop("cohort", None)
        layers: list[tuple[str, Table]] = []
        if cohort is not None:
            if cohort not in cohort_tables:
                raise fail(f"{where}.cohort", f"unknown cohort {cohort!r}")
            layers.append((f"cohorts.{cohort}", cohort_tables[cohort]))
        layers.append((where, table))
        patients[patient] = layered(layers)
    return Rules(
        defaults=built_defaults,
        silence_after_ms=silence_after_ms,
        lateness_ms=lateness_ms,
        cohorts=cohorts,
        patients=patients,
        source=source,
    )


_BUILDERS: dict[str, Any] = {
    "news2": lambda name, v: News2Rule.from_fields(v),
    "rhythm": lambda name, v: RhythmRule.from_fields(v),
    "baseline": BaselineRule.from_fields,
    "flat_line": FlatLineRule.from_fields,
    "jump": JumpRule.from_fields,
}


def _build(merged: dict[str, Table], kinds: dict[str, str], where: str, fail: Any) -> PatientRules:
    thresholds: list[ThresholdRule] = []
    news2: News2Rule | None = None
    rhythm: RhythmRule | None = None
    per_metric: dict[str, list[Any]] = {"flat_line": [], "jump": [], "baseline": []}
    for name, raw in merged.items():
        kind = kinds[name]
        at = f"{where}.{name}"
        values = _typed(raw, kind, at, fail)
        if not values.pop("enabled", True):
            continue
        suppress_s = values.pop("suppress_s", None)
        if suppress_s is None:
            suppress_s = DEFAULT_SUPPRESS_S.get(values.get("severity", "low"), 0.0)
        dip_s = values.pop("dip_s", 0.0)
        if kind in per_metric and values["metric"] not in METRICS:
            raise fail(f"{at}.metric", f"unknown metric {values['metric']!r}")
        try:
            if kind == "threshold":
                rule: Any = _threshold(name, values, at, fail)
            else:
                rule = _BUILDERS[kind](name, values)
        except ValueError as exc:  # the rule's own check: "field: message"
            key, _, message = str(exc).partition(": ")
            raise fail(f"{at}.{key}", message) from exc
        rule = replace(rule, suppress_ms=round(suppress_s * 1000))
        if "dip_s" in _FIELDS[kind]:
            rule = replace(rule, dip_ms=round(dip_s * 1000))
        if kind == "threshold":
            thresholds.append(rule)
        elif kind == "news2":
            news2 = rule
        elif kind == "rhythm":
            rhythm = rule
        else:
            same = [r.rule for r in per_metric[kind] if r.metric == rule.metric]
            if same:
                raise fail(f"{at}.metric", f"{rule.metric} already has the {kind} rule {same[0]}")
            per_metric[kind].append(rule)
    return PatientRules(
        tuple(thresholds),
        news2,
        rhythm,
        flat_lines=tuple(per_metric["flat_line"]),
        jumps=tuple(per_metric["jump"]),
        baselines=tuple(per_metric["baseline"]),
    )


def _typed(raw: Table, kind: str, at: str, fail: Any) -> Table:
    """The rule's fields with their types checked; durations must not be negative."""
    known = _FIELDS[kind]
    values: Table = {}
    for key, value in raw.items():
        if key == "kind":
            continue
        expected = known.get(key)
        if expected is None:
            raise fail(f"{at}.{key}", f"unknown field for a {kind} rule")
        ok = (
            isinstance(value, bool)
            if expected is bool
            else isinstance(value, expected) and not isinstance(value, bool)
            if expected in (int, str)
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok:
            raise fail(f"{at}.{key}", f"must be {expected.__name__} (got {value!r})")
        if expected is float:
            value = float(value)
            if not math.isfinite(value):
                raise fail(f"{at}.{key}", "must be finite")
            if key.endswith("_s") and value < 0:
                raise fail(f"{at}.{key}", f"must not be negative (got {value:g})")
        values[key] = value
    missing = [k for k in known if k not in values and k not in _OPTIONAL]
    if missing:
        raise fail(f"{at}.{missing[0]}", "missing")
    return values


def _threshold(name: str, v: Table, at: str, fail: Any) -> ThresholdRule:
    if v["metric"] not in METRICS:
        raise fail(f"{at}.metric", f"unknown metric {v['metric']!r}")
    if v["direction"] not in ("above", "below"):
        raise fail(f"{at}.direction", f"must be 'above' or 'below' (got {v['direction']!r})")
    if v["severity"] not in SEVERITIES:
        raise fail(f"{at}.severity", f"unknown severity {v['severity']!r}")
    rule = ThresholdRule(
        rule=name,
        metric=v["metric"],
        above=v["direction"] == "above",
        threshold=v["threshold"],
        clear=v["clear"],
        for_ms=round(v["for_s"] * 1000),
        clear_for_ms=round(v["clear_for_s"] * 1000),
        severity=v["severity"],
    )
    # Without hysteresis a value hovering at the limit would open and resolve episodes
    # over and over: the clear level must lie on the healthy side of the threshold.
    if (rule.clear > rule.threshold) if rule.above else (rule.clear < rule.threshold):
        side = "<=" if rule.above else ">="
        raise fail(
            f"{at}.clear",
            f"rule {name}: clear level {rule.clear:g} must be {side} the threshold "
            f"{rule.threshold:g}",
        )
    return rule


def _table(value: Any, where: str, fail: Any) -> Table:
    if not isinstance(value, dict):
        raise fail(where, f"must be a table (got {type(value).__name__})")
    return value


def _env_overrides(settings: Settings) -> dict[str, Table]:
    """VITALS_* thresholds that were set: they override the file's defaults."""
    found: dict[str, Table] = {}
    for name, (rule, key) in _ENV.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if key.endswith("_s"):
            _ms(name, value)
        found.setdefault(rule, {})[key] = float(value)
    if settings.clear_for_s is not None:
        _ms("clear_for_s", settings.clear_for_s)
        for rule in ("spo2_low", "hr_high"):
            found.setdefault(rule, {})["clear_for_s"] = float(settings.clear_for_s)
    return found


def _ms(name: str, seconds: float) -> int:
    if seconds < 0:
        raise ConfigError(f"{name} must not be negative (got {seconds:g})")
    return round(seconds * 1000)

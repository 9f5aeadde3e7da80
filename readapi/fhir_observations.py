"""The Observations only the read API writes (beside vitals/fhir.py's stored reading): a
metric's per-minute or per-hour statistics, the blood pressure panel, a NEWS2 score.
Plain dicts, validated by the HAPI FHIR validator in tests/integration/test_fhir_validator.py.

Statistics take the shape of FHIR's own statistics operation (R4 `Observation/$stats`):
the metric's code, the bucket as `effectivePeriod`, one component per statistic coded in
the R4 `observation-statistics` code system, a component's value in the metric's unit
(its count an integer). The search serves them (`resolution=1m|1h`) rather than `$stats`
because these are stored, paged series of buckets, while `$stats` answers one set of
statistics over one period as `Parameters` (docs/fhir.md).
"""

from __future__ import annotations

from typing import Any

from vitals import contract, fhir

STATISTICS = "http://terminology.hl7.org/CodeSystem/observation-statistics"
SNOMED = "http://snomed.info/sct"
# NEWS2 total score: SNOMED CT (UK edition), as NHS England's UK Core early warning score
# guidance and the NHS Digital NEWS2 FHIR IG name it; LOINC has no NEWS2 total score code
# we could verify (docs/fhir.md).
NEWS2_CODING = {
    "system": SNOMED,
    "code": "1104051000000101",
    "display": "Royal College of Physicians National Early Warning Score 2 - total score",
}
BP_PROFILE = fhir.PROFILE_BASE + "bp"
# The kinds in their ids (vitals/fhir.resource_id); a reading's is its metric's.
PANEL_KIND, NEWS2_KIND = "bp", "news2"
_BUCKET_MS = {"1m": 60_000, "1h": 3_600_000}
_BUCKET_TEXT = {"1m": "per minute", "1h": "per hour"}


def statistics_kind(metric: str, resolution: str) -> str:
    return f"{metric.replace('_', '-')}-{resolution}"


def _when(t_ms: int) -> str:
    return contract.iso(t_ms).replace("+00:00", "Z")


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": fhir.UNIT_TEXT.get(unit, unit), "system": fhir.UCUM,
            "code": unit}  # fmt: skip


def _category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": fhir.OBSERVATION_CATEGORY, "code": code}], "text": code}]


def _statistic(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": STATISTICS, "code": code, "display": display}]}


def statistics(
    *, patient_id: str, metric: str, resolution: str, bucket_ms: int, unit: str,
    mean: float, minimum: float, maximum: float, count: int,
) -> dict[str, Any]:  # fmt: skip
    """One bucket of readings_1m / readings_1h: mean, minimum, maximum and count."""
    codings = fhir.emitted_codings(metric)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir.resource_id(patient_id, statistics_kind(metric, resolution), bucket_ms),
        "status": "final",
    }
    category = fhir.CATEGORIES.get(metric)
    if category is not None:
        resource["category"] = _category(category)
    resource["code"] = {
        "coding": codings,
        "text": f"{codings[0]['display']}, statistics {_BUCKET_TEXT[resolution]}",
    }
    resource["subject"] = fhir.reference("Patient", patient_id)
    resource["effectivePeriod"] = {
        "start": _when(bucket_ms),
        "end": _when(bucket_ms + _BUCKET_MS[resolution]),
    }
    resource["component"] = [
        {"code": _statistic("average", "Average"), "valueQuantity": _quantity(mean, unit)},
        {"code": _statistic("minimum", "Minimum"), "valueQuantity": _quantity(minimum, unit)},
        {"code": _statistic("maximum", "Maximum"), "valueQuantity": _quantity(maximum, unit)},
        {"code": _statistic("count", "Count"), "valueInteger": count},
    ]
    return resource


def blood_pressure(
    *, patient_id: str, t_ms: int, systolic: float, diastolic: float, unit: str, device_id: str
) -> dict[str, Any]:
    """A systolic and a diastolic reading of one device at one time, as the R4 `bp`
    profile requires them: one panel with two components."""
    return {
        "resourceType": "Observation",
        "id": fhir.resource_id(patient_id, PANEL_KIND, t_ms, device_id),
        "meta": {"profile": [fhir.VITALSIGNS, BP_PROFILE]},
        "status": "final",
        "category": _category("vital-signs"),
        "code": {"coding": [fhir.BP_PANEL_CODING], "text": "Blood pressure panel"},
        "subject": fhir.reference("Patient", patient_id),
        "effectiveDateTime": _when(t_ms),
        "device": fhir.reference("Device", device_id),
        "component": [
            {"code": {"coding": fhir.emitted_codings(metric)}, "valueQuantity": _quantity(v, unit)}
            for metric, v in (("systolic_bp", systolic), ("diastolic_bp", diastolic))
        ],
    }


def news2(
    *, patient_id: str, t_ms: int, computed_ms: int, score: int, band: str, red: bool,
    spo2_scale: int, missing: list[str],
) -> dict[str, Any]:  # fmt: skip
    """A stored NEWS2 score record (news2_scores) as a survey Observation."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir.resource_id(patient_id, NEWS2_KIND, t_ms),
        "status": "final",
        "category": _category("survey"),
        "code": {"coding": [NEWS2_CODING], "text": "NEWS2 total score"},
        "subject": fhir.reference("Patient", patient_id),
        "effectiveDateTime": _when(t_ms),
        "issued": _when(computed_ms),
        # UK Core's unit for an early warning score.
        "valueQuantity": {
            "value": score,
            "unit": "{ScoreOf}",
            "system": fhir.UCUM,
            "code": "{ScoreOf}",
        },
        "method": {
            "text": f"NEWS2 (Royal College of Physicians, 2017), SpO2 scale {spo2_scale}, "
            "computed by the vitals processor from the latest reading of each parameter "
            "(docs/scores.md)"
        },
    }
    # The band and what was missing as notes: R4's interpretation codes (high, low,
    # abnormal...) have no code for a NEWS2 clinical risk band.
    notes = [f"clinical risk: {band}" + (" (a single parameter scored 3)" if red else "")]
    if missing:
        notes.append(f"partial: computed without {', '.join(missing)}")
    resource["note"] = [{"text": text} for text in notes]
    return resource

"""FHIR R4 (4.0.1) for the catalog: which codes name which metric, and the resources both
front doors write (Observation, OperationOutcome, Bundle). Plain dicts, no HTTP.

One table (`CODES`) serves both directions: the gateway's FHIR door (ingest/fhir/) reads a
posted Observation's codings through it, the read API's FHIR facade (readapi/fhir.py)
writes a stored reading's Observation from it. The codes are documented with their
sources in docs/fhir.md: LOINC as the R4 vital-signs profiles name them, IEEE 11073-10101
(MDC) as the HL7 Personal Health Device IG puts them first on a device Observation. Only
MDC codes found in an HL7 publication with their reference id are here (the R4
`devicemetric-type` value set names the code system without listing its codes); a code
not yet verified is refused as unknown, never guessed.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from vitals import contract

FHIR_VERSION = "4.0.1"
MEDIA_TYPE = "application/fhir+json"
LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Our refusal codes (docs/wire-format.md) as a code system, in OperationOutcome.issue.details.
PROBLEM_SYSTEM = "urn:vitals:problem"
VITALSIGNS = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
PROFILE_BASE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True, slots=True)
class Code:
    """One code of one system and the metric it names."""

    system: str
    code: str
    display: str
    metric: str


# Every code the gateway accepts, per metric; the first LOINC code of a metric is the one
# the read API writes (for SpO2 the R4 `oxygensat` profile requires 2708-6, and 59408-5,
# the pulse-oximetry code, is written beside it).
CODES: tuple[Code, ...] = (
    Code(LOINC, "8867-4", "Heart rate", "heart_rate"),
    Code(MDC, "147842", "MDC_ECG_HEART_RATE", "heart_rate"),
    Code(MDC, "149530", "MDC_PULS_OXIM_PULS_RATE", "heart_rate"),
    Code(LOINC, "2708-6", "Oxygen saturation in Arterial blood", "spo2"),
    Code(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "spo2"),
    Code(MDC, "150456", "MDC_PULS_OXIM_SAT_O2", "spo2"),
    Code(LOINC, "9279-1", "Respiratory rate", "resp_rate"),
    Code(MDC, "151562", "MDC_RESP_RATE", "resp_rate"),
    Code(LOINC, "8310-5", "Body temperature", "body_temp"),
    Code(LOINC, "8480-6", "Systolic blood pressure", "systolic_bp"),
    Code(MDC, "150021", "MDC_PRESS_BLD_NONINV_SYS", "systolic_bp"),
    Code(LOINC, "8462-4", "Diastolic blood pressure", "diastolic_bp"),
    Code(MDC, "150022", "MDC_PRESS_BLD_NONINV_DIA", "diastolic_bp"),
    Code(LOINC, "15074-8", "Glucose [Moles/volume] in Blood", "glucose"),
    Code(LOINC, "2339-0", "Glucose [Mass/volume] in Blood", "glucose"),
    Code(LOINC, "55423-8", "Number of steps in unspecified time Pedometer", "steps"),
)
BY_CODE: dict[tuple[str, str], Code] = {(c.system, c.code): c for c in CODES}

# The blood pressure panel: its components carry systolic and diastolic. The mean arterial
# pressure component is known and not stored (the catalog has no metric for it).
BP_PANEL = frozenset({(LOINC, "85354-9"), (MDC, "150020")})
BP_PANEL_CODING = {"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}
BP_MEAN = frozenset({(LOINC, "8478-0"), (MDC, "150023")})
# The PHD IG's coincident time stamp (MDC_ATTR_TIME_ABS): the device's clock against the
# gateway's; taken without storing (docs/fhir.md says what is not done with it yet).
COINCIDENT_TIME = (MDC, "67975")

# The R4 vital-signs profile each metric's Observation claims beside `vitalsigns` (None:
# the base profile only, the metric has no profile of its own in R4).
PROFILES: dict[str, str | None] = {
    "heart_rate": "heartrate",
    "spo2": "oxygensat",
    "resp_rate": "resprate",
    "body_temp": "bodytemp",
    "systolic_bp": None,
    "diastolic_bp": None,
}
# The metrics the read API serves as FHIR Observations, with their category: glucose is a
# laboratory value and steps an activity, not vital signs. rr_interval, consciousness and
# supplemental_o2 have no code here yet (vitals/catalog.py), so FHIR neither takes nor
# serves them.
CATEGORIES: dict[str, str | None] = {
    **{metric: "vital-signs" for metric in PROFILES},
    "glucose": "laboratory",
    "steps": "activity",
}
# UCUM's human-readable unit beside the code.
UNIT_TEXT = {
    "/min": "/min",
    "%": "%",
    "Cel": "Cel",
    "mm[Hg]": "mm[Hg]",
    "mmol/L": "mmol/L",
    "ms": "ms",
    "{steps}": "steps",
}

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def emitted_codings(metric: str) -> list[dict[str, str]]:
    """The codings the read API writes for `metric`: its LOINC codes, else its MDC codes."""
    codes = [c for c in CODES if c.metric == metric and c.system == LOINC]
    if metric != "spo2":
        codes = codes[:1]
    if not codes:
        codes = [c for c in CODES if c.metric == metric][:1]
    return [{"system": c.system, "code": c.code, "display": c.display} for c in codes]


def readable_metrics() -> frozenset[str]:
    return frozenset(CATEGORIES)


def observation_id(patient_id: str, metric: str, t_ms: int, device_id: str) -> str:
    """A stored reading's Observation id: stable, derived from its unique key."""
    return resource_id(patient_id, metric.replace("_", "-"), t_ms, device_id)


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """What an id of resource_id names: the row to look up by its primary key (the
    device as a hash: the rows of one patient, series and time are few)."""

    patient_id: str
    kind: str
    t_ms: int
    device_hash: str | None


_PATIENT_IN_ID = re.compile(r"^[A-Za-z0-9\-]+$")
_KIND = re.compile(r"^[a-z0-9\-]+$")


def resource_id(patient_id: str, kind: str, t_ms: int, device_id: str | None = None) -> str:
    """`<patient>.<kind>.<time, base 36 ms>[.<device hash>]`: readable back into the row's
    key (GET /fhir/r4/Observation/{id} probes the primary key, no scan). A patient id a
    FHIR id cannot hold (other characters, too long) gets a UUID v5 instead: stable, but
    not readable by id (docs/fhir.md)."""
    parts = [patient_id, kind, _base36(t_ms)]
    if device_id is not None:
        parts.append(_device_hash(device_id))
    readable = ".".join(parts)
    if _PATIENT_IN_ID.match(patient_id) and _FHIR_ID.match(readable):
        return readable
    return str(uuid.uuid5(contract.NAMESPACE, f"{kind}|{patient_id}|{t_ms}|{device_id}"))


def resource_key(ident: str) -> ResourceKey | None:
    """The key in an id of resource_id, or None when it is not one."""
    parts = ident.split(".")
    if len(parts) not in (3, 4) or not _FHIR_ID.match(ident):
        return None
    patient_id, kind, t_text, *device = parts
    try:
        t_ms = int(t_text, 36)
    except ValueError:
        return None
    if not _PATIENT_IN_ID.match(patient_id) or not _KIND.match(kind) or t_ms < 0:
        return None
    return ResourceKey(patient_id, kind, t_ms, device[0] if device else None)


def _device_hash(device_id: str) -> str:
    return hashlib.sha256(device_id.encode()).hexdigest()[:12]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


def reference(kind: str, ident: str) -> dict[str, Any]:
    """A literal reference when `ident` is a valid FHIR id, else a logical one (our ids may
    hold characters a FHIR id may not)."""
    if _FHIR_ID.match(ident):
        return {"reference": f"{kind}/{ident}"}
    return {"type": kind, "identifier": {"system": f"urn:vitals:{kind.lower()}", "value": ident}}


def observation(
    *, patient_id: str, metric: str, t_ms: int, value: float, unit: str, device_id: str
) -> dict[str, Any]:
    """A stored reading as an R4 Observation (the vital-signs profiles where they apply)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(patient_id, metric, t_ms, device_id),
    }
    category = CATEGORIES.get(metric)
    if metric in PROFILES:
        profiles = [VITALSIGNS]
        own = PROFILES[metric]
        if own is not None:
            profiles.append(PROFILE_BASE + own)
        resource["meta"] = {"profile": profiles}
    resource["status"] = "final"
    if category is not None:
        resource["category"] = [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": category}], "text": category}
        ]
    codings = emitted_codings(metric)
    resource["code"] = {"coding": codings, "text": codings[0]["display"]}
    resource["subject"] = reference("Patient", patient_id)
    resource["effectiveDateTime"] = contract.iso(t_ms).replace("+00:00", "Z")
    resource["valueQuantity"] = {
        "value": value,
        "unit": UNIT_TEXT.get(unit, unit),
        "system": UCUM,
        "code": unit,
    }
    resource["device"] = reference("Device", device_id)
    return resource


# HTTP status -> OperationOutcome issue type (R4 value set `issue-type`).
_ISSUE_TYPE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    408: "timeout",
    409: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    503: "transient",
}


def issue(status: int, code: str, detail: str, *, expression: str | None = None) -> dict[str, Any]:
    """One OperationOutcome issue: severity error, the type for `status`, our `code` in
    `details`, the human-readable `detail` as its text."""
    found: dict[str, Any] = {
        "severity": "error",
        "code": _ISSUE_TYPE.get(status, "exception"),
        "details": {"coding": [{"system": PROBLEM_SYSTEM, "code": code}], "text": detail},
    }
    if expression is not None:
        found["expression"] = [expression]
    return found


def operation_outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}

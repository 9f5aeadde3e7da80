"""What the read API's FHIR facade supports, as one table, and `GET /fhir/r4/metadata`
(the CapabilityStatement) written from it.

The routes check their parameters against the same table (readapi/fhir.py refuses every
search parameter its resource's row does not list), so the statement cannot claim what a
route refuses nor hide what it takes (tests/integration/test_fhir_metadata.py). Serving
one more resource is one more `Supported` row in `RESOURCES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from frontdoor.apidocs import API_VERSION
from frontdoor.fhir import fhir_response
from vitals import fhir

router = APIRouter()

_SPEC = "http://hl7.org/fhir/SearchParameter/"
# The day this table last changed (CapabilityStatement.date is required).
DATE = "2026-12-07"


@dataclass(frozen=True, slots=True)
class Param:
    """One search (or result) parameter a resource's search takes."""

    name: str
    type: str  # a FHIR search-param-type
    documentation: str
    definition: str | None = None  # the spec's SearchParameter, when it is one of them


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation on a resource type and the parameters it takes."""

    name: str  # without the $
    definition: str  # the spec's OperationDefinition
    params: tuple[Param, ...]
    documentation: str

    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


@dataclass(frozen=True, slots=True)
class Supported:
    """One resource type the facade serves: its interactions, search parameters and
    operations."""

    type: str
    interactions: tuple[str, ...]  # FHIR type-restful-interaction codes
    params: tuple[Param, ...] = ()
    profiles: tuple[str, ...] = ()
    documentation: str = ""
    operations: tuple[Operation, ...] = ()

    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


OBSERVATION = Supported(
    type="Observation",
    interactions=("read", "search-type"),
    params=(
        Param(
            "patient",
            "reference",
            "the patient, `ID` or `Patient/ID`; exactly one patient or subject is required",
            _SPEC + "clinical-patient",
        ),
        Param("subject", "reference", "the patient as `Patient/ID`", _SPEC + "Observation-subject"),
        Param(
            "code",
            "token",
            "required, one `[system|]code`: a metric's LOINC or IEEE "
            "11073 code, the blood pressure panel 85354-9, or NEWS2 (SNOMED CT "
            "1104051000000101)",
            _SPEC + "clinical-code",
        ),
        Param(
            "date",
            "date",
            "at most one lower (ge, gt) and one upper (le, lt) bound, "
            "a full dateTime with an offset; eq and partial dates are refused",
            _SPEC + "clinical-date",
        ),
        Param(
            "resolution",
            "token",
            "raw (the default), 1m or 1h: stored readings, or "
            "per-minute / per-hour statistics (mean, minimum, maximum, count) of one "
            "metric (not part of FHIR; docs/fhir.md)",
        ),
        Param("_count", "number", "page size, 1 to the server's page maximum"),
        Param("_cursor", "string", "taken from a `next` link only (a signed cursor)"),
    ),
    profiles=(
        fhir.VITALSIGNS,
        *(fhir.PROFILE_BASE + p for p in ("heartrate", "oxygensat", "resprate", "bodytemp", "bp")),
    ),
    documentation="Readings, blood pressure panels, per-minute and per-hour statistics and "
    "NEWS2 scores of one patient within the reader's care teams; unknown parameters are "
    "refused. Read by id: every Observation the search returns, unless its patient's id "
    "cannot be part of a FHIR id (docs/fhir.md).",
)

# Bounded: one page per request, and a range of at most this many days.
EVERYTHING_DAYS_MAX = 7
EVERYTHING = Operation(
    name="everything",
    definition="http://hl7.org/fhir/OperationDefinition/Patient-everything",
    params=(
        Param("start", "date", "required, a full dateTime with an offset: from"),
        Param(
            "end",
            "date",
            f"required, the same: to (exclusive), at most {EVERYTHING_DAYS_MAX} days after start",
        ),
        Param("_count", "number", "page size, 1 to the server's page maximum"),
        Param("_cursor", "string", "taken from a `next` link only (a signed cursor)"),
    ),
    documentation="GET only: every Observation the Observation search serves for the "
    "patient within [start, end) (readings of each metric, blood pressure panels, NEWS2 "
    "scores; no statistics), as a paged searchset. Not the Patient resource (not served); "
    f"start and end are required and at most {EVERYTHING_DAYS_MAX} days apart; _since and "
    "_type are refused.",
)
PATIENT = Supported(type="Patient", interactions=(), operations=(EVERYTHING,))

DETECTED_ISSUE = Supported(
    type="DetectedIssue",
    interactions=("read", "search-type"),
    params=(
        Param(
            "patient",
            "reference",
            "required, the patient, `ID` or `Patient/ID`, within the reader's care teams",
            _SPEC + "clinical-patient",
        ),
        Param("_count", "number", "page size, 1 to the server's page maximum"),
        Param("_cursor", "string", "taken from a `next` link only (a signed cursor)"),
    ),
    documentation="The product's alerts, one DetectedIssue per alert (its id the alert id): "
    "the episode as identifiedPeriod, acknowledgement, escalation and outcome as "
    "mitigations, the reading that opened it as evidence; suppressed repeats are not served "
    "(docs/fhir.md).",
)
SUBSCRIPTION = Supported(
    type="Subscription",
    interactions=("create", "read", "delete"),
    documentation="Topic-based subscriptions of the R4 subscriptions backport on the alerts "
    "topic, rest-hook channel, id-only or full-resource payloads; created with an issued "
    "reader key and limited to its care teams; delete turns a subscription off "
    "(docs/fhir.md#subscriptions).",
)

RESOURCES: tuple[Supported, ...] = (OBSERVATION, PATIENT, DETECTED_ISSUE, SUBSCRIPTION)


@router.get("/fhir/r4/metadata")
async def metadata() -> Response:
    # No credential: a client reads the statement before it has one (FHIR's capabilities
    # interaction); it holds nothing about any patient.
    return fhir_response(capability_statement())


@cache
def capability_statement() -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": DATE,
        "publisher": "vitals pipeline",
        "kind": "instance",
        "software": {"name": "vitals read API", "version": API_VERSION},
        "implementation": {"description": "vitals read API: FHIR R4 facade (read only)"},
        "fhirVersion": fhir.FHIR_VERSION,
        "format": [fhir.MEDIA_TYPE, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read only. JSON only (no XML, no _format).",
                "security": {
                    "cors": False,
                    "description": "Every interaction but metadata needs a reader key "
                    "(`Authorization: Bearer` and the key, issued by `vitals keys issue "
                    "--kind reader`); a key reads only the patients of its care teams: "
                    "any other patient is 404. Every read is in the read audit.",
                },
                "resource": [_resource(r) for r in RESOURCES],
            }
        ],
    }


def _resource(supported: Supported) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": supported.type}
    if supported.profiles:
        resource["supportedProfile"] = list(supported.profiles)
    if supported.documentation:
        resource["documentation"] = supported.documentation
    if supported.interactions:
        resource["interaction"] = [{"code": code} for code in supported.interactions]
        resource["versioning"] = "no-version"
    if supported.params:
        resource["searchParam"] = [_param(p) for p in supported.params]
    if supported.operations:
        resource["operation"] = [
            {"name": o.name, "definition": o.definition, "documentation": o.documentation}
            for o in supported.operations
        ]
    return resource


def _param(param: Param) -> dict[str, Any]:
    found: dict[str, Any] = {"name": param.name}
    if param.definition is not None:
        found["definition"] = param.definition
    found["type"] = param.type
    found["documentation"] = param.documentation
    return found

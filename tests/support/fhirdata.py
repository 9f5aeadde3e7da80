"""PHD-style FHIR Bundles for the tests: what a personal health gateway posts (HL7 PHD IG:
Patient and Device entries as conditional creates, Observations coded MDC then LOINC,
UCUM quantities, blood pressure as a panel with components), and how they are posted."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests.support.secured_gateway import Gateway
from vitals.fhir import LOINC, MDC, UCUM

PATIENT_URL = "urn:uuid:5b7842fe-978d-4182-a41f-0d07a8617bc2"
DEVICE_URL = "urn:uuid:d44b0315-947e-4da5-bb6d-533eceb7a294"
T = "2026-01-01T10:00:00+08:00"


def patient_entry(patient_id: str) -> dict[str, Any]:
    identifier = {"system": "urn:oid:2.9991.2.3.4.5.6.7.8.10", "value": patient_id}
    return {
        "fullUrl": PATIENT_URL,
        "resource": {"resourceType": "Patient", "identifier": [identifier]},
        "request": {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier={identifier['system']}|{patient_id}",
        },
    }


def device_entry(device_id: str) -> dict[str, Any]:
    identifier = {"system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680", "value": device_id}
    return {
        "fullUrl": DEVICE_URL,
        "resource": {"resourceType": "Device", "identifier": [identifier]},
        "request": {"method": "POST", "url": "Device", "ifNoneExist": "identifier=x"},
    }


def quantity(value: Any, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def observation(
    codings: list[tuple[str, str]],
    value: Any = 72,
    unit: str = "/min",
    t: str | None = T,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"value": f"{codings[0][1]}-{t}-{value}"}],
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "subject": {"reference": PATIENT_URL},
        "device": {"reference": DEVICE_URL},
    }
    if t is not None:
        resource["effectiveDateTime"] = t
    if value is not None:
        resource["valueQuantity"] = quantity(value, unit)
    resource.update(extra)
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": resource,
        "request": {"method": "POST", "url": "Observation"},
    }


def component(system: str, code: str, value: Any) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": system, "code": code}]},
        "valueQuantity": quantity(value, "mm[Hg]"),
    }


def heart_rate(value: Any = 72, t: str = T) -> dict[str, Any]:
    return observation([(MDC, "149530"), (LOINC, "8867-4")], value, "/min", t)


def spo2(value: Any = 97, t: str = T) -> dict[str, Any]:
    return observation([(MDC, "150456"), (LOINC, "59408-5")], value, "%", t)


def blood_pressure(systolic: Any = 120, diastolic: Any = 80, t: str = T) -> dict[str, Any]:
    entry = observation([(MDC, "150020"), (LOINC, "85354-9")], None, t=t)
    entry["resource"]["component"] = [
        component(MDC, "150021", systolic),
        component(MDC, "150022", diastolic),
        component(MDC, "150023", 93),  # the mean: known, not stored
    ]
    return entry


def bundle(
    *entries: dict[str, Any], kind: str = "transaction", patient: str = "p-1", device: str = "d-1"
) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [patient_entry(patient), device_entry(device), *entries],
    }


def dumps(document: Any) -> bytes:
    return orjson.dumps(document)


FHIR = "application/fhir+json"


async def post(
    gw: Gateway, key: str, document: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = document if isinstance(document, bytes) else dumps(document)
    return await gw.client.post(
        "/fhir/r4",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": FHIR, **(headers or {})},
    )


def outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == FHIR
    doc = response.json()
    assert doc["resourceType"] == "OperationOutcome"
    assert doc["issue"][0]["details"]["coding"][0]["code"] == code
    assert doc["issue"][0]["severity"] == "error"
    return doc


def ours(fleet: dict[str, str], *entries: Any, kind: str = "transaction") -> dict[str, Any]:
    return bundle(*entries, kind=kind, patient=fleet["patient"], device=fleet["device"])

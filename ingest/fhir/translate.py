"""A FHIR R4 batch or transaction Bundle -> the JSON upload's reading items, per entry.

Only the translation: what the Bundle says in FHIR becomes what /v1/readings would have
been sent (`{"metric", "t", "v", "unit"}` items for one device and one patient), and
every entry that cannot become readings is refused here with a code of its own. The
items are then checked by the very code that checks /v1/readings (ingest/validation.py:
units, conversion, ranges, clock skew, repeats), in ingest/fhir/door.py.

What a Personal Health Device gateway sends (HL7 PHD IG): Patient and Device entries
(conditional creates), Observations coded with IEEE 11073 MDC and LOINC, UCUM
valueQuantity (blood pressure as components of a panel), effectiveDateTime, subject and
device references to those entries or to ids already known, and an identifier for
duplicate detection. Patient and Device entries are not created: they name the patient
and the device, which the device registry resolves like any upload (ingest/intake.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from frontdoor.errors import Malformed, NothingValid, Rejection, TooLarge
from ingest.jsonkeys import refuse_repeated_keys
from vitals import fhir
from vitals.bounds import identifier_problem

BUNDLE_TYPES = ("batch", "transaction")
# A stored reading is final; amended and corrected values are new readings of record at
# another key only (docs/wire-format.md, One value per reading), so they are taken as sent.
STATUSES = ("final", "amended", "corrected")


@dataclass(slots=True)
class Entry:
    """One Bundle entry: what it is and what became of it in the translation."""

    kind: str  # its resourceType, or "" when there is none
    items: list[dict[str, Any]] = field(default_factory=list)  # readings (Observation)
    refusal: Rejection | None = None
    stored: bool = False  # an Observation whose readings go to the upload


@dataclass(slots=True)
class Translation:
    bundle_type: str
    entries: list[Entry]
    device_id: str | None = None
    patient_id: str | None = None

    def items(self) -> tuple[list[Any], list[int]]:
        """Every reading item, and the entry each came from."""
        items: list[Any] = []
        origins: list[int] = []
        for index, entry in enumerate(self.entries):
            if entry.refusal is None:
                items.extend(entry.items)
                origins.extend([index] * len(entry.items))
        return items, origins

    def refusals(self) -> list[Rejection]:
        return [e.refusal for e in self.entries if e.refusal is not None]


class _Refused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        self.code, self.detail = code, detail


def translate(body: bytes, *, max_entries: int) -> Translation:
    """The Bundle's entries as reading items; raises for a body that is no such Bundle."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed("malformed_json", f"body is not valid JSON: {exc}") from None
    refuse_repeated_keys(body, doc)
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        raise Malformed("not_a_bundle", "body must be a FHIR Bundle resource")
    bundle_type = doc.get("type")
    if bundle_type not in BUNDLE_TYPES:
        raise Malformed(
            "unsupported_bundle_type",
            f"Bundle.type must be batch or transaction, not {_show(bundle_type)}",
        )
    raw_entries = doc.get("entry", [])
    if not isinstance(raw_entries, list):
        raise Malformed("bad_envelope", "Bundle.entry must be a list")
    if len(raw_entries) > max_entries:
        raise TooLarge(
            "too_many_readings",
            f"{len(raw_entries)} entries in one Bundle; at most {max_entries}: split it",
        )
    if not raw_entries:
        raise NothingValid("empty_batch", "the Bundle has no entries")

    translation = Translation(bundle_type, [Entry(_kind(e)) for e in raw_entries])
    # Patient and Device entries by their fullUrl (urn:uuid:…, or a literal reference), so
    # that an Observation's reference to one resolves to the id it carries.
    named: dict[str, tuple[str, str | None]] = {}
    for index, raw in enumerate(raw_entries):
        entry = translation.entries[index]
        if entry.kind in ("Patient", "Device"):
            try:
                ident = _named(raw)
            except _Refused as why:
                entry.refusal = Rejection(index, why.code, why.detail)
                ident = None
            url = raw.get("fullUrl")
            if isinstance(url, str):
                named[url] = (entry.kind, ident)
    for index, raw in enumerate(raw_entries):
        entry = translation.entries[index]
        if entry.refusal is not None or entry.kind in ("Patient", "Device"):
            continue
        try:
            _observation(translation, entry, raw, named)
        except _Refused as why:
            entry.refusal = Rejection(index, why.code, why.detail)
    return translation


def _kind(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("resource"), dict):
        kind = raw["resource"].get("resourceType")
        return kind if isinstance(kind, str) else ""
    return ""


def _method(raw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    request = raw.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    if method not in allowed:
        raise _Refused(
            "unsupported_method",
            f"entry.request.method must be {' or '.join(allowed)}, not {_show(method)}",
        )


def _named(raw: dict[str, Any]) -> str:
    """A Patient's or Device's id in our registry: its first identifier's value."""
    _method(raw, ("POST", "PUT"))
    resource = raw["resource"]
    for ident in resource.get("identifier") or ():
        value = ident.get("value") if isinstance(ident, dict) else None
        if isinstance(value, str):
            _check_id(value, resource["resourceType"])
            return value
    raise _Refused(
        "missing_identifier",
        f"a {resource['resourceType']} entry needs an identifier (its id in the registry)",
    )


def _check_id(value: str, kind: str) -> None:
    problem = identifier_problem(value)
    if problem is not None:
        raise _Refused("bad_identifier", f"the {kind} identifier {problem}")


def _observation(
    translation: Translation,
    entry: Entry,
    raw: dict[str, Any],
    named: dict[str, tuple[str, str | None]],
) -> None:
    if entry.kind != "Observation":
        raise _Refused(
            "unsupported_resource",
            f"entries must be Observation, Patient or Device, not {_show(entry.kind or None)}",
        )
    _method(raw, ("POST",))
    resource: dict[str, Any] = raw["resource"]
    status = resource.get("status")
    if status not in STATUSES:
        raise _Refused(
            "unsupported_status",
            f"Observation.status must be one of {', '.join(STATUSES)}, not {_show(status)}",
        )
    codings = _codings(resource.get("code"), "Observation.code")
    if fhir.COINCIDENT_TIME in codings:
        return  # the device's clock against the gateway's: taken, not stored
    patient = _reference(resource.get("subject"), "Patient", named, "subject")
    device = _reference(resource.get("device"), "Device", named, "device")
    t = _effective(resource)
    if codings & fhir.BP_PANEL:
        items = _components(resource, t)
    else:
        metric = _metric(codings, "Observation.code")
        items = [_item(metric, t, resource.get("valueQuantity"), "Observation.valueQuantity")]
    # One upload is one device and one patient (one Kafka message, keyed by patient).
    if translation.device_id is None:
        translation.device_id, translation.patient_id = device, patient
    elif device != translation.device_id:
        raise _Refused(
            "another_device", "a Bundle carries one device's readings; post others apart"
        )
    elif patient != translation.patient_id:
        raise _Refused(
            "another_patient", "a Bundle carries one patient's readings; post others apart"
        )
    entry.items = items
    entry.stored = True


def _codings(concept: Any, where: str) -> set[tuple[str, str]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    found = {
        (c["system"], c["code"])
        for c in codings or ()
        if isinstance(c, dict) and _text(c.get("system")) and _text(c.get("code"))
    }
    if not found:
        raise _Refused("missing_code", f"{where} needs a coding with system and code")
    return found


def _metric(codings: set[tuple[str, str]], where: str) -> str:
    """The one catalog metric the codings name; never a guess: unknown codes beside a
    known one are fine (a device may add its own), two metrics are a conflict."""
    metrics = {fhir.BY_CODE[c].metric for c in codings if c in fhir.BY_CODE}
    if not metrics:
        shown = ", ".join(f"{s}|{c}" for s, c in sorted(codings))
        raise _Refused("unknown_code", f"{where} {shown[:120]} is not in the catalog")
    if len(metrics) > 1:
        raise _Refused(
            "conflicting_codes", f"{where} names several metrics: {', '.join(sorted(metrics))}"
        )
    return metrics.pop()


def _components(resource: dict[str, Any], t: str) -> list[dict[str, Any]]:
    items = []
    for n, component in enumerate(resource.get("component") or ()):
        where = f"Observation.component[{n}]"
        if not isinstance(component, dict):
            raise _Refused("bad_item", f"{where} must be an object")
        codings = _codings(component.get("code"), f"{where}.code")
        if codings & fhir.BP_MEAN:
            continue  # mean arterial pressure: known, not a catalog metric
        metric = _metric(codings, f"{where}.code")
        if metric not in ("systolic_bp", "diastolic_bp"):
            raise _Refused("unknown_code", f"{where}.code is not a blood pressure component")
        items.append(_item(metric, t, component.get("valueQuantity"), f"{where}.valueQuantity"))
    if not items:
        raise _Refused("missing_value", "a blood pressure panel needs its components")
    return items


def _item(metric: str, t: str, quantity: Any, where: str) -> dict[str, Any]:
    """A reading item as /v1/readings takes it; its value and unit are checked there."""
    if not isinstance(quantity, dict):
        raise _Refused("missing_value", f"{where} is required (a value with a UCUM code)")
    system = quantity.get("system")
    if system is not None and system != fhir.UCUM:
        raise _Refused("unknown_unit", f"{where}.system must be {fhir.UCUM}")
    unit = quantity.get("code", quantity.get("unit"))
    return {"metric": metric, "t": t, "v": quantity.get("value"), "unit": unit}


def _effective(resource: dict[str, Any]) -> str:
    t = resource.get("effectiveDateTime")
    if t is None:
        period = resource.get("effectivePeriod")
        # A measurement over a period is stored at its start (the reading's time).
        t = period.get("start") if isinstance(period, dict) else None
    if t is None:
        raise _Refused(
            "missing_time", "Observation needs effectiveDateTime or effectivePeriod.start"
        )
    return t


def _reference(ref: Any, kind: str, named: dict[str, tuple[str, str | None]], element: str) -> str:
    """The registry id a reference names: an entry of this Bundle (by fullUrl), a literal
    `Kind/id`, or a logical reference by identifier."""
    if not isinstance(ref, dict):
        raise _Refused(f"missing_{element}", f"Observation.{element} is required")
    literal = ref.get("reference")
    if isinstance(literal, str):
        if literal in named:
            named_kind, ident = named[literal]
            if named_kind != kind or ident is None:
                raise _Refused(
                    f"bad_{element}", f"Observation.{element} must name a valid {kind} entry"
                )
            return ident
        prefix, _, ident = literal.rpartition("/")
        if prefix.rpartition("/")[2] == kind and ident:
            _check_id(ident, kind)
            return ident
        raise _Refused(
            f"bad_{element}",
            f"Observation.{element} {_show(literal)} is no entry of this Bundle nor {kind}/id",
        )
    identifier = ref.get("identifier")
    value = identifier.get("value") if isinstance(identifier, dict) else None
    if isinstance(value, str):
        _check_id(value, kind)
        return value
    raise _Refused(f"bad_{element}", f"Observation.{element} has no reference nor identifier")


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

"""The FHIR Bundle door without HTTP: translation to reading items, the /v1/readings checks
on them, entries taken or refused whole, batch against transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from frontdoor.errors import Malformed, NothingValid, TooLarge, TransactionRefused
from ingest.fhir.door import BundleDoor
from ingest.validation import Batch
from tests.support import fhirdata as fd
from vitals.bounds import epoch_ms
from vitals.fhir import LOINC, MDC

NOW = epoch_ms(datetime.fromisoformat("2026-01-01T03:00:00+00:00"))


def validate(document: Any, *, max_readings: int = 100) -> tuple[BundleDoor, Batch]:
    door = BundleDoor()
    batch = door.validate(
        fd.dumps(document), now_ms=NOW, max_future_skew_s=300, max_readings=max_readings
    )
    return door, batch


def statuses(door: BundleDoor, batch: Batch) -> list[str]:
    _, content = door.settle("u-1", batch)
    answer = orjson.loads(content)
    return [e["response"]["status"] for e in answer["entry"]]


def codes(error: NothingValid) -> list[tuple[int, str]]:
    return [(r.index, r.code) for r in error.rejected]


def test_a_phd_bundle_becomes_the_readings_of_one_device_and_patient() -> None:
    door, batch = validate(fd.bundle(fd.heart_rate(), fd.spo2(), fd.blood_pressure()))
    t = epoch_ms(datetime.fromisoformat(fd.T))
    assert (batch.device_id, batch.patient_id) == ("d-1", "p-1")
    assert batch.rows == (
        ("heart_rate", t, 72.0, "/min"),
        ("spo2", t, 97.0, "%"),
        ("systolic_bp", t, 120.0, "mm[Hg]"),
        ("diastolic_bp", t, 80.0, "mm[Hg]"),
    )
    assert batch.origins() == (2, 3, 4, 4)  # the entries they came from
    assert statuses(door, batch) == [
        "200 OK",
        "200 OK",
        "201 Created",
        "201 Created",
        "201 Created",
    ]


def test_alternative_codes_and_units_convert_as_the_json_api_converts() -> None:
    temp_f = fd.observation([(LOINC, "8310-5")], 98.6, "[degF]")
    sat = fd.observation([(LOINC, "2708-6")], 95, "%")
    hr = fd.observation([(MDC, "147842")], 60, "/min", t="2026-01-01T10:00:01+08:00")
    _, batch = validate(fd.bundle(temp_f, sat, hr))
    assert [r[0] for r in batch.rows] == ["body_temp", "spo2", "heart_rate"]
    assert batch.rows[0][2] == pytest.approx(37.0)


def test_references_may_be_literal_or_logical() -> None:
    entry = fd.heart_rate()
    entry["resource"]["subject"] = {"reference": "Patient/p-9"}
    entry["resource"]["device"] = {"identifier": {"value": "watch 9"}}
    document = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    _, batch = validate(document)
    assert (batch.device_id, batch.patient_id) == ("watch 9", "p-9")


def test_effective_period_is_stored_at_its_start() -> None:
    entry = fd.heart_rate()
    del entry["resource"]["effectiveDateTime"]
    entry["resource"]["effectivePeriod"] = {"start": fd.T, "end": "2026-01-01T10:05:00+08:00"}
    _, batch = validate(fd.bundle(entry))
    assert batch.rows[0][1] == epoch_ms(datetime.fromisoformat(fd.T))


def test_the_coincident_time_stamp_is_taken_not_stored() -> None:
    coincident = fd.observation([(MDC, "67975")], None)
    coincident["resource"]["valueDateTime"] = fd.T
    door, batch = validate(fd.bundle(coincident, fd.heart_rate()))
    assert len(batch.rows) == 1
    assert statuses(door, batch)[2:] == ["200 OK", "201 Created"]


def _without(entry: dict[str, Any], field: str) -> dict[str, Any]:
    del entry["resource"][field]
    return entry


BAD_ENTRIES = {
    "unsupported_resource": lambda: {"resource": {"resourceType": "Condition"}},
    "unsupported_method": lambda: {**fd.heart_rate(), "request": {"method": "DELETE"}},
    "unsupported_status": lambda: fd.observation([(LOINC, "8867-4")], status="entered-in-error"),
    "missing_code": lambda: _without(fd.heart_rate(), "code"),
    "unknown_code": lambda: fd.observation([(LOINC, "29463-7")], 70, "kg"),
    "conflicting_codes": lambda: fd.observation([(LOINC, "8867-4"), (MDC, "150456")]),
    "unknown_unit": lambda: fd.observation([(LOINC, "8867-4")], 72, "kg"),
    "missing_value": lambda: _without(fd.heart_rate(), "valueQuantity"),
    "bad_value": lambda: fd.heart_rate("72"),
    "out_of_range": lambda: fd.heart_rate(400),
    "missing_time": lambda: _without(fd.heart_rate(), "effectiveDateTime"),
    "timestamp_without_offset": lambda: fd.heart_rate(t="2026-01-01T10:00:00"),
    "future_timestamp": lambda: fd.heart_rate(t="2030-01-01T10:00:00Z"),
    "missing_subject": lambda: _without(fd.heart_rate(), "subject"),
    "missing_device": lambda: _without(fd.heart_rate(), "device"),
    "bad_subject": lambda: {
        **fd.heart_rate(),
        "resource": {**fd.heart_rate()["resource"], "subject": {"reference": fd.DEVICE_URL}},
    },
}


@pytest.mark.parametrize("code", sorted(BAD_ENTRIES))
def test_a_batch_refuses_a_bad_entry_and_takes_the_rest(code: str) -> None:
    door, batch = validate(fd.bundle(fd.spo2(), BAD_ENTRIES[code](), kind="batch"))
    assert [(r.index, r.code) for r in batch.rejected] == [(3, code)]
    assert [r[0] for r in batch.rows] == ["spo2"]
    _, content = door.settle("u-1", batch)
    refused = orjson.loads(content)["entry"][3]["response"]
    assert refused["status"][:3] in ("400", "409", "422")
    assert refused["outcome"]["issue"][0]["details"]["coding"][0]["code"] == code


@pytest.mark.parametrize("code", sorted(BAD_ENTRIES))
def test_a_transaction_with_a_bad_entry_is_refused_whole(code: str) -> None:
    with pytest.raises(TransactionRefused) as refused:
        validate(fd.bundle(fd.spo2(), BAD_ENTRIES[code]()))
    assert codes(refused.value) == [(3, code)]


def test_a_blood_pressure_panel_is_taken_or_refused_whole() -> None:
    door, batch = validate(
        fd.bundle(fd.heart_rate(), fd.blood_pressure(systolic=400), kind="batch")
    )
    assert [r[0] for r in batch.rows] == ["heart_rate"]  # not the valid diastolic either
    assert codes(NothingValid("x", "y", batch.rejected)) == [(3, "out_of_range")]


def test_a_second_device_or_patient_is_refused() -> None:
    other = fd.heart_rate(t="2026-01-01T10:00:05+08:00")
    other["resource"]["device"] = {"reference": "Device/d-2"}
    _, batch = validate(fd.bundle(fd.heart_rate(), other, kind="batch"))
    assert [(r.index, r.code) for r in batch.rejected] == [(3, "another_device")]


def test_a_batch_of_only_bad_entries_is_nothing_valid() -> None:
    with pytest.raises(NothingValid) as refused:
        validate(fd.bundle(fd.heart_rate(400), kind="batch"))
    assert codes(refused.value) == [(2, "out_of_range")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[]", "not_a_bundle"),
        (fd.dumps({"resourceType": "Patient"}), "not_a_bundle"),
        (
            fd.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}),
            "unsupported_bundle_type",
        ),
        (fd.dumps({"resourceType": "Bundle", "type": "batch", "entry": {}}), "bad_envelope"),
        (b'{"resourceType": "Bundle", "type": "batch", "type": "transaction"}', "malformed_json"),
    ],
)
def test_a_body_that_is_no_batch_or_transaction_is_refused_whole(body: bytes, code: str) -> None:
    with pytest.raises(Malformed) as refused:
        BundleDoor().validate(body, now_ms=NOW, max_future_skew_s=300, max_readings=10)
    assert refused.value.code == code


def test_an_empty_bundle_and_one_over_the_limit_are_refused() -> None:
    with pytest.raises(NothingValid) as empty:
        validate({"resourceType": "Bundle", "type": "batch", "entry": []})
    assert empty.value.code == "empty_batch"
    with pytest.raises(TooLarge) as large:
        validate(fd.bundle(fd.heart_rate(), fd.spo2()), max_readings=3)
    assert large.value.code == "too_many_readings"

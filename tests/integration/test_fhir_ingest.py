"""POST /fhir/r4 over real HTTP, a real broker and the real device registry (PostgreSQL).

The gateway runs with the registry enforced (as deployments run it); what was produced is
read back from the readings topic, so "nothing produced" means no message at all.
"""

from __future__ import annotations

import orjson
import pytest

from tests.support import fhirdata as fd
from tests.support.fhirdata import FHIR, ours, outcome, post
from tests.support.ids import uid
from tests.support.secured_gateway import Gateway, running, secured
from tests.support.topics import produced
from vitals import contract
from vitals.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_phd_transaction_is_one_upload_and_a_retry_is_answered_again(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    document = ours(fleet, fd.heart_rate(), fd.spo2(), fd.blood_pressure())
    key = {"Idempotency-Key": uid("k")}
    first = await post(gateway, fleet["key_a"], document, key)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == FHIR
    answer = first.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == (
        ["200 OK"] * 2 + ["201 Created"] * 3
    )
    again = await post(gateway, fleet["key_a"], document, key)
    assert again.json() == answer and again.headers["idempotent-replayed"] == "true"

    records = await produced(settings)
    assert len(records) == 1  # one upload, one message, the retry none
    upload = contract.decode_upload(records[0].value)
    assert upload.upload_id == answer["identifier"]["value"]
    assert (upload.device_id, upload.patient_id) == (fleet["device"], fleet["patient"])
    assert upload.gateway_id == fleet["gw_a"]
    assert [r.metric for r in upload.readings] == [
        "heart_rate",
        "spo2",
        "systolic_bp",
        "diastolic_bp",
    ]


async def test_the_same_readings_make_the_same_message_as_the_json_api(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    fhir_answer = await post(gateway, fleet["key_a"], ours(fleet, fd.heart_rate(), fd.spo2()))
    assert fhir_answer.status_code == 200, fhir_answer.text
    json_body = {
        "device_id": fleet["device"],
        "patient_id": fleet["patient"],
        "readings": [
            {"metric": "heart_rate", "t": fd.T, "v": 72, "unit": "/min"},
            {"metric": "spo2", "t": fd.T, "v": 97, "unit": "%"},
        ],
    }
    json_answer = await gateway.client.post(
        "/v1/readings",
        content=orjson.dumps(json_body),
        headers={"Authorization": f"Bearer {fleet['key_a']}", "Content-Type": "application/json"},
    )
    assert json_answer.status_code == 202
    via_fhir, via_json = [contract.decode_upload(r.value) for r in await produced(settings)]
    assert via_fhir.readings == via_json.readings


async def test_a_transaction_with_one_bad_entry_produces_nothing(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    document = ours(fleet, fd.heart_rate(), fd.spo2(400))
    doc = outcome(await post(gateway, fleet["key_a"], document), 422, "transaction_refused")
    assert doc["issue"][1]["expression"] == ["Bundle.entry[3]"]
    assert doc["issue"][1]["details"]["coding"][0]["code"] == "out_of_range"
    assert await produced(settings) == []


async def test_a_batch_with_one_bad_entry_takes_the_rest(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    unknown = fd.observation([(fd.LOINC, "29463-7")], 70, "kg")
    response = await post(
        gateway, fleet["key_a"], ours(fleet, fd.heart_rate(), unknown, kind="batch")
    )
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[2]["response"]["status"] == "201 Created"
    refused = entries[3]["response"]
    assert refused["status"] == "400 Bad Request"
    assert refused["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "unknown_code"
    (record,) = await produced(settings)
    assert [r.metric for r in contract.decode_upload(record.value).readings] == ["heart_rate"]


async def test_a_batch_of_only_bad_entries_answers_each_and_produces_nothing(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    document = ours(fleet, fd.heart_rate(t="2030-01-01T00:00:00Z"), kind="batch")
    response = await post(gateway, fleet["key_a"], document)
    assert response.status_code == 200, response.text
    refused = response.json()["entry"][2]["response"]
    assert refused["status"] == "422 Unprocessable Entity"
    assert refused["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "future_timestamp"
    assert await produced(settings) == []


async def test_devices_not_registered_or_not_bound_are_refused_whole(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    good = ours(fleet, fd.heart_rate())
    cases = [
        (fleet["key_b"], good, "gateway_not_bound"),
        (
            fleet["key_a"],
            fd.bundle(fd.heart_rate(), patient=fleet["patient"], device=uid("dev")),
            "device_not_registered",
        ),
        (
            fleet["key_a"],
            fd.bundle(fd.heart_rate(), patient=uid("p"), device=fleet["device"]),
            "patient_not_bound",
        ),
    ]
    for key, document, code in cases:
        doc = outcome(await post(gateway, key, document), 403, code)
        assert fleet["patient"] not in str(doc) and fleet["device"] not in str(doc)
    assert await produced(settings) == []


async def test_a_reading_before_the_binding_is_refused_per_entry_in_a_batch(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    before = fd.spo2(t="2025-06-01T00:00:00Z")  # the device was bound a day before T0
    response = await post(
        gateway, fleet["key_a"], ours(fleet, fd.heart_rate(), before, kind="batch")
    )
    assert response.status_code == 200, response.text
    refused = response.json()["entry"][3]["response"]
    assert refused["status"] == "403 Forbidden"
    assert refused["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "outside_binding"
    (record,) = await produced(settings)
    assert len(contract.decode_upload(record.value).readings) == 1


async def test_bodies_the_door_refuses_whole_are_operation_outcomes(
    gateway: Gateway, settings: Settings, fleet: dict[str, str]
) -> None:
    key = fleet["key_a"]
    outcome(await post(gateway, key, b"{not json"), 400, "malformed_json")
    outcome(await post(gateway, key, {"resourceType": "Patient"}), 400, "not_a_bundle")
    other = {"resourceType": "Bundle", "type": "document", "entry": []}
    outcome(await post(gateway, key, other), 400, "unsupported_bundle_type")
    outcome(await post(gateway, key, b"x" * 20_000), 413, "body_too_large")
    async with running(secured(settings, max_readings_per_upload=3)) as small:
        too_many = ours(fleet, fd.heart_rate(), fd.spo2())  # 4 entries
        outcome(await post(small, key, too_many), 413, "too_many_readings")
    wrong_type = await gateway.client.post(
        "/fhir/r4/",
        content=fd.dumps(ours(fleet, fd.heart_rate())),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"},
    )
    outcome(wrong_type, 415, "unsupported_media_type")
    unauthenticated = await gateway.client.post("/fhir/r4", content=b"{}")
    doc = outcome(unauthenticated, 401, "missing_credential")
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    assert doc["issue"][0]["code"] == "login"
    assert await produced(settings) == []

"""The FHIR form of alerts and the notifier's pure parts: the DetectedIssue mapping, the
notification shapes of the Backport IG, decoding vitals.alerts documents (a bad one is a
ContractError: parked, never a crash), and the retry schedule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from sinks.fhir_notify import queue
from sinks.fhir_notify.runner import Deliverer, decode
from sinks.outage import Outage
from vitals import contract, fhir, fhir_alerts
from vitals.errors import ContractError
from vitals.settings import Settings

T0 = 1_795_312_800_000


def opened(**changes: Any) -> contract.Detection:
    fields: dict[str, Any] = dict(
        alert_id=contract.alert_id("p-1", "spo2_low", T0), patient_id="p-1", rule="spo2_low",
        state="opened", severity="medium", episode_start=T0, at=T0 + 120_000,
        detected=T0 + 121_000, retrospective=False, metric="spo2", value=87.0,
        device_id="watch-1", detail="spo2 < 90 for >= 120 s",
    )  # fmt: skip
    return contract.Detection(**(fields | changes))


def test_an_alert_is_a_detected_issue_whose_state_changes_never_change_its_id() -> None:
    changes = (
        fhir_alerts.Change("outcome", 0, T0 + 900_000, "nurse-a", "advised"),
        fhir_alerts.Change("escalated", 2, T0 + 600_000, None, None),
        fhir_alerts.Change("acknowledged", 0, T0 + 700_000, "nurse-a", None),
    )
    issue = fhir_alerts.detected_issue(fhir_alerts.Alert(opened(), T0 + 1_000_000, changes))
    assert issue["id"] == opened().alert_id
    assert issue["severity"] == "moderate"
    assert issue["identifiedPeriod"] == {
        "start": fhir_alerts.instant(T0),
        "end": fhir_alerts.instant(T0 + 1_000_000),
    }
    assert [m["action"]["coding"][0]["code"] for m in issue["mitigation"]] == [
        "escalated-2", "acknowledged", "outcome-advised",
    ]  # fmt: skip
    assert "author" not in issue["mitigation"][0]  # the clock escalated, not a person
    reading = fhir.observation_id("p-1", "spo2", T0 + 120_000, "watch-1")
    assert issue["evidence"][0]["detail"] == [{"reference": f"Observation/{reading}"}]
    assert "meta" not in issue


def test_device_rules_have_no_evidence_and_retrospective_alerts_are_tagged() -> None:
    issue = fhir_alerts.detected_issue(
        fhir_alerts.Alert(
            opened(metric=None, device_id=None, detail="", retrospective=True), None, ()
        )
    )
    assert "evidence" not in issue and "detail" not in issue and "mitigation" not in issue
    assert issue["meta"]["tag"][0]["code"] == "retrospective"
    assert "end" not in issue["identifiedPeriod"]


def _subscription(content: str) -> fhir_alerts.Subscription:
    return fhir_alerts.Subscription(
        uuid.UUID(int=7), "http://ehr/hook", content, ("Authorization: Bearer x",), None,
        "why", "active",
    )  # fmt: skip


def test_a_notification_is_a_history_bundle_led_by_its_status_and_the_same_on_every_attempt() -> (
    None
):
    issue = fhir_alerts.detected_issue(fhir_alerts.Alert(opened(), None, ()))
    made = [
        fhir_alerts.notification(
            subscription=_subscription(content),
            base="http://api/fhir/r4/",
            event_number=4,
            events_since_start=9,
            timestamp_ms=T0,
            issue=issue,
        )  # fmt: skip
        for content in ("full-resource", "id-only", "full-resource")
    ]
    full, id_only, again = made
    assert full["type"] == "history" and full["id"] == again["id"]
    status = {p["name"]: p for p in full["entry"][0]["resource"]["parameter"]}
    assert status["events-since-subscription-start"]["valueString"] == "9"
    assert status["subscription"]["valueReference"]["reference"].endswith(
        "/Subscription/00000000-0000-0000-0000-000000000007"
    )
    assert full["entry"][1]["resource"] is issue
    assert len(id_only["entry"]) == 1
    shown = fhir_alerts.subscription_resource(_subscription("id-only"))
    assert "header" not in shown["channel"]  # the endpoint's credentials are not echoed
    assert "_criteria" not in shown


def _record(value: Any) -> ConsumerRecord:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return ConsumerRecord("t", 0, 0, 0, 0, b"p-1", raw, None, 0, len(raw), [])


def test_alert_documents_of_both_versions_decode_to_the_change_they_announce() -> None:
    v1 = contract.alert_document(opened(), T0 + 122_000)
    change = contract.LifecycleChange("escalated", 2, T0 + 700_000, None)
    v2 = contract.lifecycle_document(opened(), change, T0 + 701_000)
    alert = uuid.UUID(opened().alert_id)
    assert decode(_record(v1)) == (
        alert,
        "opened",
        0,
        "p-1",
        datetime.fromtimestamp((T0 + 122_000) / 1000, UTC),
    )
    assert decode(_record(v2))[1:3] == ("escalated", 2)


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        {"schema": "vitals.alert/9"},
        {"schema": "vitals.alert/1", "alert_id": "x"},
        "a string",
    ],
)
def test_anything_else_on_the_alerts_topic_is_a_contract_error(bad: Any) -> None:
    good = contract.alert_document(opened(), T0)
    cases = {
        "missing": {k: v for k, v in good.items() if k != "patient_id"},
        "state": good | {"state": "paused"},
        "alert_id": good | {"alert_id": "not-a-uuid"},
    }
    for doc in [bad, *cases.values()]:
        with pytest.raises(ContractError):
            decode(_record(doc))


def test_retries_double_from_the_base_to_the_maximum_less_up_to_a_quarter() -> None:
    settings = Settings(fhir_notify_retry_base_s=2, fhir_notify_retry_max_s=30)
    deliverer = Deliverer(settings, Outage("test"))

    def due(attempts: int) -> queue.Due:
        return queue.Due(
            uuid.UUID(int=1), uuid.UUID(int=2), "opened", 0, 1, datetime.now(UTC), attempts,
            "http://e", "id-only", (), None, "r", 1, True,
        )  # fmt: skip

    for attempts, most in ((1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (12, 30)):
        seconds = deliverer._retry_in(due(attempts)).total_seconds()  # noqa: SLF001
        assert 0.75 * most <= seconds <= most, (attempts, seconds)

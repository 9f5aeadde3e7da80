"""Alerts in FHIR R4: an alert as a `DetectedIssue`, an EHR's topic-based `Subscription`
(the HL7 Subscriptions R5 Backport IG 1.1.0 on R4) and the notification Bundles sent to it.
Plain dicts, no HTTP; docs/fhir.md says why each resource was chosen.

The resources take the IG's shapes but do not claim its profiles in `meta.profile`: the
validator the tests run offline has no copy of the IG, and a claim nothing here checks
would be a promise untested (docs/fhir.md).

One alert (one episode, one `alert_id`) is one DetectedIssue whose id is the alert id: its
state (resolved, acknowledged, escalated, outcome) changes the resource, never its id, so
an EHR that keeps the resource by id always holds the latest state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from vitals import contract, fhir

# The one topic this server offers: every state change of an alert (docs/fhir.md).
TOPIC = "urn:vitals:fhir:SubscriptionTopic:alert-state"
_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
# What an EHR's Subscription claims (taken, not required).
SUBSCRIPTION_PROFILE = _BACKPORT + "backport-subscription"
FILTER_CRITERIA = _BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = _BACKPORT + "backport-payload-content"
CONTENTS = ("id-only", "full-resource")  # `empty` is not offered (docs/fhir.md)

RULE_SYSTEM = "urn:vitals:alert-rule"
ACTION_SYSTEM = "urn:vitals:alert-action"
ALERT_SYSTEM = "urn:vitals:alert"
FLAG_SYSTEM = "urn:vitals:alert-flag"
# Our severities onto DetectedIssue.severity (R4 value set detectedissue-severity).
SEVERITY = {"high": "high", "medium": "moderate", "low": "low"}


@dataclass(frozen=True, slots=True)
class Change:
    """A human state of the alert (alert_lifecycle): acknowledged, escalated, outcome."""

    state: str
    level: int
    at_ms: int
    actor: str | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Alert:
    """What the DetectedIssue is built from: the opened row, its resolution, its changes."""

    opened: contract.Detection
    resolved_ms: int | None
    changes: tuple[Change, ...]


def instant(ms: int) -> str:
    return contract.iso(ms).replace("+00:00", "Z")


def detected_issue(alert: Alert) -> dict[str, Any]:
    """The alert as an R4 DetectedIssue. `identifiedPeriod` is the episode: its start, and
    its end once it resolved; acknowledgement, escalations and the outcome are
    `mitigation`s, oldest first."""
    o = alert.opened
    period = {"start": instant(o.episode_start)}
    if alert.resolved_ms is not None:
        period["end"] = instant(alert.resolved_ms)
    resource: dict[str, Any] = {"resourceType": "DetectedIssue", "id": o.alert_id}
    if o.retrospective:  # detected on late data: record, never page (docs/alert-schema.md)
        resource["meta"] = {"tag": [{"system": FLAG_SYSTEM, "code": "retrospective"}]}
    resource.update(
        identifier=[{"system": ALERT_SYSTEM, "value": o.alert_id}],
        status="final",
        code={"coding": [{"system": RULE_SYSTEM, "code": o.rule}], "text": o.rule},
        severity=SEVERITY[o.severity],
        patient=fhir.reference("Patient", o.patient_id),
        identifiedPeriod=period,
    )
    evidence = _evidence(o)
    if evidence:
        resource["evidence"] = [evidence]
    if o.detail:
        resource["detail"] = o.detail
    mitigations = [_mitigation(c) for c in sorted(alert.changes, key=lambda c: c.at_ms)]
    if mitigations:
        resource["mitigation"] = mitigations
    return resource


def _evidence(o: contract.Detection) -> dict[str, Any]:
    """The watched metric's code and, for a metric served as FHIR, the reading at the
    opening's event time (its Observation id is derived from its key, vitals/fhir.py)."""
    if o.metric is None or o.metric not in fhir.readable_metrics():
        return {}
    codings = fhir.emitted_codings(o.metric)
    found: dict[str, Any] = {"code": [{"coding": codings, "text": o.metric}]}
    if o.device_id is not None:
        ident = fhir.observation_id(o.patient_id, o.metric, o.at, o.device_id)
        found["detail"] = [{"reference": f"Observation/{ident}"}]
    return found


def _mitigation(change: Change) -> dict[str, Any]:
    code = change.state
    if change.state == "escalated":
        code = f"escalated-{change.level}"
    elif change.state == "outcome" and change.outcome is not None:
        code = f"outcome-{change.outcome}"
    found: dict[str, Any] = {
        "action": {"coding": [{"system": ACTION_SYSTEM, "code": code}], "text": code},
        "date": instant(change.at_ms),
    }
    if change.actor is not None:
        found["author"] = {"display": change.actor}
    return found


# --- subscriptions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: uuid.UUID
    endpoint: str
    content: str  # one of CONTENTS
    headers: tuple[str, ...]  # channel.header: "Name: value", sent with every notification
    patient_id: str | None  # the filter `patient=`; None: every patient of the key's teams
    reason: str
    status: str  # "active" | "off"


def subscription_resource(s: Subscription) -> dict[str, Any]:
    """The stored subscription as a Backport IG `Subscription` (channel headers are not
    echoed: they may hold the endpoint's credentials)."""
    criteria: dict[str, Any] = {}
    if s.patient_id is not None:
        patient = fhir.reference("Patient", s.patient_id).get("reference", s.patient_id)
        criteria = {
            "extension": [
                {"url": FILTER_CRITERIA, "valueString": f"DetectedIssue?patient={patient}"}
            ]
        }
    found: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": str(s.subscription_id),
        "status": s.status,
        "reason": s.reason,
        "criteria": TOPIC,
    }
    if criteria:
        found["_criteria"] = criteria
    found["channel"] = {
        "type": "rest-hook",
        "endpoint": s.endpoint,
        "payload": fhir.MEDIA_TYPE,
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": s.content}]},
    }
    return found


def notification(
    *,
    subscription: Subscription,
    base: str,
    event_number: int,
    events_since_start: int,
    timestamp_ms: int,
    issue: dict[str, Any],
) -> dict[str, Any]:
    """One event notification: a `history` Bundle whose first entry is the status
    (Parameters, the IG's R4 form of SubscriptionStatus); `issue` the DetectedIssue, sent
    whole for `full-resource`, referenced only for `id-only`."""
    sub_ref = f"{base}Subscription/{subscription.subscription_id}"
    focus = f"{base}DetectedIssue/{issue['id']}"
    status_id = str(
        uuid.uuid5(
            contract.NAMESPACE, f"notification|{subscription.subscription_id}|{event_number}"
        )
    )
    event = [
        {"name": "event-number", "valueString": str(event_number)},
        {"name": "timestamp", "valueInstant": instant(timestamp_ms)},
        {"name": "focus", "valueReference": {"reference": focus}},
    ]
    parameters = {
        "resourceType": "Parameters",
        "id": status_id,
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": sub_ref}},
            {"name": "topic", "valueCanonical": TOPIC},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
            {"name": "notification-event", "part": event},
        ],
    }
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status_id}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{sub_ref}/$status"},
            "response": {"status": "200"},
        }
    ]
    if subscription.content == "full-resource":
        entries.append(
            {
                "fullUrl": focus,
                "resource": issue,
                "request": {"method": "PUT", "url": f"DetectedIssue/{issue['id']}"},
                "response": {"status": "200"},
            }
        )
    return {
        "resourceType": "Bundle",
        # The same id on every attempt of one event: a receiver may dedupe on it.
        "id": str(uuid.uuid5(contract.NAMESPACE, f"bundle|{status_id}")),
        "type": "history",
        "timestamp": instant(contract.now_ms()),
        "entry": entries,
    }

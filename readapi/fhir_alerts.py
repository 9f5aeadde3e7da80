"""The read API's FHIR alerts: GET /fhir/r4/DetectedIssue (search by patient, read by id)
and the EHR's side of FHIR Subscriptions: POST /fhir/r4/Subscription registers an endpoint,
GET reads it back, DELETE turns it off. Resources by vitals/fhir_alerts.py; delivery by
`vitals sink fhir-notify` (sinks/fhir_notify/).

The same reader keys, care-team scope, limits and read audit as every read route
(access.py). A subscription belongs to the issued reader key that registered it and is
only ever sent alerts of that key's patients (the notifier checks before each attempt);
environment reader tokens cannot register one (they have no scope the database knows).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncpg
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.errors import Forbidden, GatewayError, Malformed, NotFound, TooLarge
from frontdoor.fhir import fhir_response, outcome_response
from frontdoor.registry import Credential
from readapi import params
from readapi.access import Access
from readapi.fhir import _one, only_supported
from readapi.fhir_capability import DETECTED_ISSUE
from vitals import fhir_alerts
from vitals.db import alert_issues
from vitals.db.pgtime import from_ms

router = APIRouter()

BODY_MAX = 16_384
HEADERS_MAX = 10
REASON_MAX = 500

_SUBSCRIPTION = """
SELECT subscription_id, endpoint, content, headers, patient_id, reason, status
FROM fhir_subscriptions WHERE subscription_id = $1 AND key_id = $2
"""


def no_such_issue() -> NotFound:
    return NotFound("no_such_alert", "no DetectedIssue with this id in this reader's care teams")


def no_such_subscription() -> NotFound:
    return NotFound("no_such_subscription", "no Subscription with this id registered by this key")


async def _answer(route: Awaitable[Response]) -> Response:
    """Answers as FHIR: a refusal is an OperationOutcome (frontdoor/fhir.py)."""
    try:
        return await route
    except GatewayError as refusal:
        return outcome_response(refusal)


def _reader(request: Request) -> Credential:
    return request.app.state.authenticator.reader_for(request.headers.get("authorization"))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/r4/"


async def _search(request: Request) -> Response:
    key = _reader(request)
    lists: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        lists.setdefault(name, []).append(value)
    given = lists.get("patient", [])
    if len(given) != 1:
        raise Malformed("missing_parameter", "exactly one patient= is required")
    kind, slash, ident = given[0].rpartition("/")
    if slash and kind != "Patient":
        raise Malformed("bad_patient_id", "patient must be ID or Patient/ID")
    patient = params.patient(ident if slash else given[0])
    access: Access = request.app.state.access
    async with access.reading(key, "fhir/DetectedIssue", patient) as read:
        only_supported(lists, DETECTED_ISSUE.param_names())
        settings = request.app.state.settings
        count = params.limit(_one(lists, "_count", required=False), settings.api_page_max)
        scope = f"fhir-detectedissue:{patient}"
        cursor_key: bytes = request.app.state.cursor_key
        cursor = params.decode_cursor(_one(lists, "_cursor", required=False), scope, cursor_key)
        after = (cursor.at, uuid.UUID(cursor.tie[0])) if cursor else None
        async with request.app.state.pool.acquire() as conn:
            found = await alert_issues.alerts(conn, patient_id=patient, after=after, rows=count + 1)
        page, more = found[:count], len(found) > count
        read.rows = len(page)
    base = _base(request)
    links = [{"relation": "self", "url": str(request.url)}]
    if more:
        last = page[-1].opened
        position = params.Cursor(scope, from_ms(last.episode_start), (last.alert_id,))
        query = [(n, v) for n, v in request.query_params.multi_items() if n != "_cursor"]
        token = params.encode_cursor(position, cursor_key)
        links.append(
            {
                "relation": "next",
                "url": base + "DetectedIssue?" + urlencode([*query, ("_cursor", token)]),
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if page:
        bundle["entry"] = [
            {
                "fullUrl": base + "DetectedIssue/" + alert.opened.alert_id,
                "resource": fhir_alerts.detected_issue(alert),
                "search": {"mode": "match"},
            }
            for alert in page
        ]
    return fhir_response(bundle)


async def _read(request: Request, issue_id: str) -> Response:
    key = _reader(request)
    try:
        alert_id = uuid.UUID(issue_id)
    except ValueError:
        raise no_such_issue() from None
    async with request.app.state.pool.acquire() as conn:
        found = await alert_issues.alerts(conn, ids=[alert_id], rows=1)
    if not found:  # no patient to attribute it to: not a read of anyone's data
        raise no_such_issue()
    access: Access = request.app.state.access
    patient = found[0].opened.patient_id
    async with access.reading(key, "fhir/DetectedIssue", patient, missing=no_such_issue) as read:
        read.rows = 1
    return fhir_response(fhir_alerts.detected_issue(found[0]))


@router.get("/fhir/r4/DetectedIssue")
async def search_issues(request: Request) -> Response:
    return await _answer(_search(request))


@router.get("/fhir/r4/DetectedIssue/{issue_id}")
async def read_issue(request: Request, issue_id: str) -> Response:
    return await _answer(_read(request, issue_id))


# --- subscriptions -------------------------------------------------------------------------


async def _register(request: Request) -> Response:
    key = _reader(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            raise TooLarge("body_too_large", f"the body is larger than {BODY_MAX} bytes")
    wanted = subscription_of(body)
    access: Access = request.app.state.access
    async with request.app.state.pool.acquire() as conn:
        if (
            await conn.fetchval("SELECT 1 FROM reader_key_scopes WHERE key_id = $1", key.key_id)
            is None
        ):
            raise Forbidden(
                "issued_key_required",
                "a Subscription is registered with an issued reader key (`vitals readers issue`)",
            )
        if wanted.patient_id is not None:
            # A filter on a patient outside the key's teams is as if there were no patient.
            async with access.reading(key, "fhir/Subscription", wanted.patient_id) as read:
                read.rows = 1
        await insert(conn, wanted, key.key_id)
    location = f"{_base(request)}Subscription/{wanted.subscription_id}"
    return fhir_response(fhir_alerts.subscription_resource(wanted), 201, {"Location": location})


async def insert(conn: asyncpg.Connection, s: fhir_alerts.Subscription, key_id: str) -> None:
    """Store a subscription for `key_id`: the API's sessions are read-only, this
    transaction alone is made read-write (as the alert actions', readapi/lifecycle.py)."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION READ WRITE")
        await conn.execute(
            "INSERT INTO fhir_subscriptions (subscription_id, key_id, endpoint, content,"
            " headers, patient_id, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            s.subscription_id, key_id, s.endpoint, s.content, list(s.headers), s.patient_id,
            s.reason,
        )  # fmt: skip


async def _subscription(request: Request, subscription_id: str) -> tuple[Credential, Any]:
    key = _reader(request)
    try:
        ident = uuid.UUID(subscription_id)
    except ValueError:
        raise no_such_subscription() from None
    async with request.app.state.pool.acquire() as conn:
        found = await conn.fetchrow(_SUBSCRIPTION, ident, key.key_id)
    if found is None:
        raise no_such_subscription()
    return key, found


async def _get(request: Request, subscription_id: str) -> Response:
    _, found = await _subscription(request, subscription_id)
    return fhir_response(fhir_alerts.subscription_resource(_stored(found)))


async def _delete(request: Request, subscription_id: str) -> Response:
    """Turns the subscription off (kept, with its notifications, for the record)."""
    key, found = await _subscription(request, subscription_id)
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION READ WRITE")
        await conn.execute(
            "UPDATE fhir_subscriptions SET status = 'off'"
            " WHERE subscription_id = $1 AND key_id = $2",
            found["subscription_id"], key.key_id,
        )  # fmt: skip
    return Response(status_code=204)


@router.post("/fhir/r4/Subscription")
async def register_subscription(request: Request) -> Response:
    return await _answer(_register(request))


@router.get("/fhir/r4/Subscription/{subscription_id}")
async def read_subscription(request: Request, subscription_id: str) -> Response:
    return await _answer(_get(request, subscription_id))


@router.delete("/fhir/r4/Subscription/{subscription_id}")
async def delete_subscription(request: Request, subscription_id: str) -> Response:
    return await _answer(_delete(request, subscription_id))


def _stored(r: asyncpg.Record) -> fhir_alerts.Subscription:
    return fhir_alerts.Subscription(
        subscription_id=r["subscription_id"], endpoint=r["endpoint"], content=r["content"],
        headers=tuple(r["headers"]), patient_id=r["patient_id"], reason=r["reason"],
        status=r["status"],
    )  # fmt: skip


# --- parsing a posted Subscription -----------------------------------------------------------

_TOP = {"resourceType", "meta", "status", "reason", "criteria", "_criteria", "channel"}
_CHANNEL = {"type", "endpoint", "payload", "_payload", "header"}


def subscription_of(body: bytes) -> fhir_alerts.Subscription:
    """A posted Backport IG Subscription, checked; Malformed (400) for anything this server
    does not do, never ignored: a subscription silently narrowed or widened would send an
    EHR other alerts than it asked for."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("malformed_json", "the body is not JSON") from None
    if not isinstance(doc, dict) or doc.get("resourceType") != "Subscription":
        raise Malformed("not_a_subscription", "the body is not a FHIR Subscription")
    _only(doc, _TOP, "Subscription")
    if doc.get("status", "requested") not in ("requested", "active"):
        raise Malformed("bad_status", "status must be requested (or active)")
    reason = doc.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
        raise Malformed(
            "bad_reason", f"reason is required: a string of 1 to {REASON_MAX} characters"
        )
    if doc.get("criteria") != fhir_alerts.TOPIC:
        raise Malformed("unknown_topic", f"criteria must be the topic {fhir_alerts.TOPIC}")
    channel = doc.get("channel")
    if not isinstance(channel, dict):
        raise Malformed("bad_channel", "channel is required")
    _only(channel, _CHANNEL, "Subscription.channel")
    if channel.get("type") != "rest-hook":
        raise Malformed("unsupported_channel", "channel.type must be rest-hook")
    endpoint = channel.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Malformed("bad_endpoint", "channel.endpoint must be an http(s) URL")
    if channel.get("payload") != "application/fhir+json":
        raise Malformed("unsupported_payload", "channel.payload must be application/fhir+json")
    content = _extension(channel.get("_payload"), fhir_alerts.PAYLOAD_CONTENT, "valueCode")
    if content not in fhir_alerts.CONTENTS:
        raise Malformed(
            "unsupported_content",
            f"the payload content extension must be one of {', '.join(fhir_alerts.CONTENTS)}",
        )
    headers = channel.get("header", [])
    if (
        not isinstance(headers, list)
        or len(headers) > HEADERS_MAX
        or not all(isinstance(h, str) and ":" in h and "\n" not in h for h in headers)
    ):
        raise Malformed("bad_header", f"channel.header: up to {HEADERS_MAX} 'Name: value' strings")
    patient = None
    if "_criteria" in doc:
        criteria = _extension(doc["_criteria"], fhir_alerts.FILTER_CRITERIA, "valueString")
        prefix = "DetectedIssue?patient="
        if not isinstance(criteria, str) or not criteria.startswith(prefix):
            raise Malformed("unsupported_filter", f"the only filter is {prefix}ID")
        value = criteria[len(prefix) :]
        patient = params.patient(value.removeprefix("Patient/"))
    return fhir_alerts.Subscription(
        subscription_id=uuid.uuid4(), endpoint=endpoint, content=content,  # type: ignore[arg-type]
        headers=tuple(headers), patient_id=patient, reason=reason.strip(), status="active",
    )  # fmt: skip


def _only(doc: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise Malformed(
            "unsupported_element", f"{where}: not supported here: {', '.join(unknown)[:200]}"
        )


def _extension(element: Any, url: str, value: str) -> Any:
    """The one extension `url` of an element's `_x` object (the only extension taken)."""
    if not isinstance(element, dict) or set(element) != {"extension"}:
        raise Malformed("bad_extension", f"expected the extension {url}")
    found = element["extension"]
    if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], dict):
        raise Malformed("bad_extension", f"expected exactly the extension {url}")
    if found[0].get("url") != url or set(found[0]) != {"url", value}:
        raise Malformed("bad_extension", f"expected the extension {url} with {value}")
    return found[0][value]

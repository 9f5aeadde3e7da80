"""The gateway's HTTP routes; thin: the work happens in Intake and Publisher.

POST /v1/readings is a plain ASGI app (PostReadings), taken by GatewayApp before FastAPI's
layers (ingest/app.py): it is the hot path, and FastAPI's dependency injection and
middleware cost more than the upload's validation. Its OpenAPI operation is written in
ingest/openapi.py. The other routes are ordinary FastAPI routes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from frontdoor.errors import GatewayError, InvalidRequest, TimedOut
from frontdoor.problems import gateway_problem, json_response, problem_response
from frontdoor.protocol import TIMED_OUT
from frontdoor.refresher import RegistryCache
from ingest.intake import Intake
from ingest.publisher import Publisher

router = APIRouter()

# Printable ASCII without spaces, as the IETF Idempotency-Key draft's examples use.
IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
JSON = b"application/json"


class PostReadings:
    """POST /v1/readings: authenticate, check the Idempotency-Key, hand the body to Intake."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        headers = first_headers(scope)
        try:
            gateway = state.authenticator.gateway_for(headers.get("authorization"))
            key = idempotency_key(headers.get("idempotency-key"))
            intake: Intake = state.intake
            answer, replayed = await intake.accept(
                gateway, headers, body_chunks(scope, receive, state.settings.body_timeout_s), key
            )
        except GatewayError as refusal:
            await gateway_problem(refusal)(scope, receive, send)
            return
        content = answer.content
        response_headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(content))]
        if replayed:
            response_headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": 202, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})


def first_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by (lower-case) name, the first of repeated ones, as
    starlette's Headers.get answers: one pass instead of a scan for every lookup."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in reversed(scope["headers"])
    }


def idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header's value, or InvalidRequest (400) saying what is wrong."""
    if value is None:
        return None
    if not value:
        problem = "String should have at least 1 character"
    elif len(value) > IDEMPOTENCY_KEY_MAX:
        problem = f"String should have at most {IDEMPOTENCY_KEY_MAX} characters"
    elif not _IDEMPOTENCY_KEY.match(value):
        problem = f"String should match pattern '{IDEMPOTENCY_KEY_PATTERN}'"
    else:
        return value
    raise InvalidRequest([{"loc": ["header", "idempotency-key"], "msg": problem}])


async def body_chunks(scope: Scope, receive: Receive, timeout_s: float) -> AsyncIterator[bytes]:
    """The body as it arrives. The connection's body deadline (frontdoor/protocol.py) ends a
    slow one: then the app sees a disconnect, and the request is marked timed out."""
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            if scope.get(TIMED_OUT):
                raise TimedOut("body_timeout", f"the body did not arrive within {timeout_s:g} s")
            raise ClientDisconnect
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    publisher: Publisher = request.app.state.publisher
    settings = request.app.state.settings
    registry: RegistryCache = request.app.state.registry
    if settings.gateway_registry and not registry.fresh():
        # Never loaded, or its reloads have failed for longer than the bound: revocations
        # and new devices would go unseen here (VITALS_REGISTRY_MAX_AGE_S).
        why = "the registry has not been loaded from the database recently"
    elif not await publisher.ready():
        why = "Kafka is not reachable"
    else:
        return json_response({"ready": True})
    return problem_response(
        503, "not_ready", "Not ready", why, {"Retry-After": str(settings.retry_after_s)}
    )


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

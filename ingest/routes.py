"""The gateway's HTTP routes; thin: the work happens in Intake and Publisher."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ingest.auth import Authenticator
from ingest.intake import Intake
from ingest.problems import json_response, problem_response
from ingest.publisher import Publisher
from ingest.refresher import RegistryCache

router = APIRouter()

# Printable ASCII without spaces, as the IETF Idempotency-Key draft's examples use.
IdempotencyKey = Annotated[
    str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]


async def gateway_id(request: Request) -> str:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a
    # thread hop per request for a dictionary lookup.
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.gateway_for(request.headers.get("authorization"))


@router.post("/v1/readings", status_code=202)
async def post_readings(
    request: Request,
    gateway: Annotated[str, Depends(gateway_id)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    intake: Intake = request.app.state.intake
    answer, replayed = await intake.accept(
        gateway, request.headers, request.stream(), idempotency_key
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(answer.content, 202, headers, media_type="application/json")


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    publisher: Publisher = request.app.state.publisher
    settings = request.app.state.settings
    registry: RegistryCache = request.app.state.registry
    if settings.gateway_registry and not registry.current().loaded:
        why = "the registry has not been loaded from the database yet"
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

"""The gateway's OpenAPI document, made to describe what the gateway really does.

`POST /v1/readings` is a plain ASGI route (ingest/routes.py) that reads its body as a
stream (size limits, gzip), so FastAPI cannot see it: its operation is written here, the
request body from the metric catalog and the settings. Every refusal is
application/problem+json, and request validation answers 400 (not FastAPI's default 422
HTTPValidationError), so the default entries are replaced by the real ones. schemathesis
checks the running gateway against this document (tests/integration).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ingest.routes import IDEMPOTENCY_KEY_MAX, IDEMPOTENCY_KEY_PATTERN
from vitals.bounds import MAX_ID_CHARS
from vitals.catalog import METRICS
from vitals.settings import Settings

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "upload_id": {"type": "string"},
        "rejected": {"$ref": "#/components/schemas/Rejections"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}

REJECTIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["index", "code", "detail"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "code": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
}

ACCEPTED = {
    "type": "object",
    "required": ["upload_id", "accepted", "rejected"],
    "properties": {
        "upload_id": {"type": "string", "format": "uuid"},
        "accepted": {"type": "integer", "minimum": 1},
        "rejected": {"$ref": "#/components/schemas/Rejections"},
    },
}

# What any route may answer besides its own: a bad header or parameter (400), too many or
# too large headers (431, frontdoor/protocol.py), a head too slow (408).
COMMON = {
    "400": "Malformed request",
    "408": "The request head or body did not arrive in time",
    "431": "Too many or too large headers",
}

UPLOAD_REFUSALS = {
    "400": "Malformed JSON, envelope or gzip; bad Idempotency-Key",
    "401": "No or bad gateway key",
    "403": "Device not registered, not this gateway's, or not this patient's",
    "409": "Idempotency-Key reused with another body",
    "413": "Body, inflated body or number of readings too large",
    "415": "Not application/json, or an encoding other than gzip",
    "422": "No valid reading in the upload",
    "429": "This gateway's rate limit; see Retry-After",
    "503": "Kafka or the registry unavailable; see Retry-After",
}

ADMIN_REFUSALS = {
    "401": "No or bad admin token",
    "404": "No such device",
    "409": "Conflicts with the registry",
}


def _problems(statuses: dict[str, str]) -> dict[str, Any]:
    return {
        status: {
            "description": text,
            "content": {"application/problem+json": {"schema": PROBLEM_REF}},
        }
        for status, text in statuses.items()
    }


def upload_schema(settings: Settings) -> dict[str, Any]:
    identifier = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
    return {
        "type": "object",
        "required": ["device_id", "patient_id", "readings"],
        "properties": {
            "device_id": identifier,
            "patient_id": identifier,
            "readings": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.max_readings_per_upload,
                # Items outside these are rejected one by one (in the 202's `rejected`),
                # not refused: the document says what is accepted.
                "items": {"anyOf": _reading_schemas()},
            },
        },
    }


def _reading_schemas() -> list[dict[str, Any]]:
    """One schema per metric in its canonical unit (with its plausible range), and one per
    other accepted unit (range checked after conversion)."""
    schemas: list[dict[str, Any]] = []
    for name, metric in sorted(METRICS.items()):
        for unit in (metric.unit, *metric.conversions):
            value: dict[str, Any] = {"type": "number"}
            if unit == metric.unit:
                value.update(minimum=metric.low, maximum=metric.high)
            schemas.append(
                {
                    "type": "object",
                    "required": ["metric", "t", "v", "unit"],
                    "properties": {
                        "metric": {"const": name},
                        "t": {"type": "string", "format": "date-time"},
                        "v": value,
                        "unit": {"const": unit},
                    },
                }
            )
    return schemas


def install(app: FastAPI, settings: Settings) -> None:
    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas.update({"Problem": PROBLEM, "Rejections": REJECTIONS, "Accepted": ACCEPTED})
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in doc["paths"].items():
            for operation in operations.values():
                responses = operation["responses"]
                responses.pop("422", None)
                responses.update(_problems(COMMON))
                if path.startswith("/v1/admin"):
                    responses.update(_problems(ADMIN_REFUSALS))
                    operation["security"] = [{"bearer": []}]
        doc["paths"] = {"/v1/readings": {"post": upload_operation(settings)}, **doc["paths"]}
        ready = doc["paths"]["/readyz"]["get"]["responses"]
        ready.update(_problems({"503": "Not ready: Kafka or the registry"}))
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"] = {
            "text/plain": {"schema": {"type": "string"}}
        }
        app.openapi_schema = doc
        return doc

    app.openapi = document  # type: ignore[method-assign]


def upload_operation(settings: Settings) -> dict[str, Any]:
    return {
        "summary": "Post Readings",
        "operationId": "post_readings_v1_readings_post",
        "security": [{"bearer": []}],
        "parameters": [
            {
                "name": "idempotency-key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                    "title": "Idempotency-Key",
                },
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": upload_schema(settings)}},
        },
        "responses": {
            "202": {
                "description": "Taken: in Kafka (acks=all)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            **_problems(UPLOAD_REFUSALS),
            **_problems(COMMON),
        },
    }

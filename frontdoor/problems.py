"""The one place where errors become application/problem+json (RFC 9457).

Every problem has type, title, status, detail and a stable machine-readable `code`; the
gateway's own refusals add `upload_id` where one was assigned, and 422 adds `rejected`.
FastAPI's own errors (404, 405, request validation) come out in the same shape.

So does an exception nothing else answered: a 500 with a correlation id, and one log line
with the same id, the exception's type and where it was raised; never its message nor the
path, which can carry a patient id (Starlette's last line would answer 500 text/plain and
uvicorn's would log the traceback with its message). `crash_answer` is called by FastAPI's
handler for Exception, which Starlette runs before re-raising, and by `ProblemOnCrash`,
wrapped around each front door by ingest/server.py, for what runs outside FastAPI (the
gateway's upload route, middleware).
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontdoor.errors import (
    GatewayError,
    InvalidRequest,
    NothingValid,
    RateLimited,
    Unauthenticated,
    Unavailable,
    rejections_document,
)
from vitals.logs import exception_fields

log = logging.getLogger("vitals.http")

PROBLEM = "application/problem+json"
TYPE_PREFIX = "urn:vitals:problem:"  # + code; documented in docs/wire-format.md
CORRELATION_ID = "vitals.correlation_id"  # in the scope once a crash was answered


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(document), status, headers, media_type="application/json")


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    document = {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(orjson.dumps(document), status, headers, media_type=PROBLEM)


def gateway_problem(error: GatewayError) -> Response:
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = error.challenge
    if isinstance(error, Unavailable | RateLimited):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, NothingValid):
        extra["rejected"] = rejections_document(error.rejected)
    if isinstance(error, InvalidRequest):
        extra["errors"] = error.errors
    if error.upload_id is not None:
        extra["upload_id"] = error.upload_id
    return problem_response(error.status, error.code, error.title, error.detail, headers, **extra)


def install(app: FastAPI) -> None:
    """Route every error the app can raise through problem+json."""

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return gateway_problem(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, code, phrase, detail, headers)

    async def on_invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Each error says where (e.g. header Idempotency-Key) and what is wrong; the
        # input itself is left out (it may be long).
        errors = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{' '.join(e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(400, "invalid_request", "Invalid request", detail, errors=errors)

    async def on_crash(request: Request, exc: Exception) -> Response:
        return crash_answer(request.scope, exc)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(Exception, on_crash)  # the rest: 500 problem+json


def crash_answer(scope: Scope, exc: BaseException) -> Response:
    """Log `exc` under a new correlation id and return the 500 to send for it."""
    correlation_id = uuid.uuid4().hex
    scope[CORRELATION_ID] = correlation_id
    log.error(
        "unexpected error answered 500",
        extra={
            "correlation_id": correlation_id,
            "method": scope.get("method"),
            **exception_fields(exc),
        },
    )
    return problem_response(
        500,
        "internal_error",
        "Internal Server Error",
        "an unexpected error; quote the correlation_id when reporting it",
        correlation_id=correlation_id,
    )


class ProblemOnCrash:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - the point: nothing escapes unanswered
            if CORRELATION_ID in scope:
                return  # answered and logged by FastAPI's handler; Starlette re-raised it
            answer = crash_answer(scope, exc)
            if not started:
                await answer(scope, receive, send)
            # Else half an answer went out: returning makes uvicorn close the connection.

"""A front door's refusal as a FHIR OperationOutcome, for the FHIR routes of both doors.

The same refusals as problem+json (frontdoor/problems.py), with the same status and
headers; the machine-readable code travels in `issue.details.coding` (system
`urn:vitals:problem`), the human-readable detail in its text. An upload's refusal names
its upload id in `diagnostics`, for support.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from frontdoor.errors import (
    GatewayError,
    NothingValid,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from vitals import fhir


def fhir_response(document: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:  # fmt: skip
    return Response(orjson.dumps(document), status, headers, media_type=fhir.MEDIA_TYPE)


def outcome_response(error: GatewayError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = error.challenge
    if isinstance(error, Unavailable | RateLimited):
        headers["Retry-After"] = str(error.retry_after_s)
    first = fhir.issue(error.status, error.code, error.detail)
    if error.upload_id is not None:
        first["diagnostics"] = f"upload_id {error.upload_id}"
    issues = [first]
    if isinstance(error, NothingValid):
        issues.extend(
            fhir.issue(error.status, r.code, r.detail, expression=f"Bundle.entry[{r.index}]")
            for r in error.rejected
        )
    return fhir_response(fhir.operation_outcome(*issues), error.status, headers)

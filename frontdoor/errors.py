"""The front doors' refusals, one class per HTTP status; rendered in frontdoor/problems.py.

Each carries a stable machine-readable `code` (documented in docs/wire-format.md) and a
human-readable `detail`. Validation raises them without knowing about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vitals.errors import VitalsError


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    code: str
    detail: str


def rejections_document(rejected: Iterable[Rejection]) -> list[dict[str, Any]]:
    """Rejections as they appear in answers: [{"index", "code", "detail"}]."""
    return [{"index": r.index, "code": r.code, "detail": r.detail} for r in rejected]


class GatewayError(VitalsError):
    status = 500
    title = "Internal Server Error"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.upload_id: str | None = None  # set once the request has one, for support


class Malformed(GatewayError):
    status = 400
    title = "Malformed request"


class InvalidRequest(Malformed):
    """A header fails validation; `errors` says where and what, as FastAPI's do."""

    title = "Invalid request"

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        detail = "; ".join(f"{' '.join(e['loc'])}: {e['msg']}" for e in errors)
        super().__init__("invalid_request", detail)
        self.errors = list(errors)


class Unauthenticated(GatewayError):
    status = 401
    title = "Missing or invalid credential"

    def __init__(self, code: str, detail: str, *, token_given: bool) -> None:
        super().__init__(code, detail)
        # RFC 6750 section 3: error="invalid_token" only when a token was presented.
        self.challenge = 'Bearer realm="vitals"' + (
            ', error="invalid_token"' if token_given else ""
        )


class Forbidden(GatewayError):
    status = 403
    title = "Not allowed for this gateway"


class NotFound(GatewayError):
    status = 404
    title = "Not found"


class TimedOut(GatewayError):
    status = 408
    title = "Request body too slow"


class AlertConflict(GatewayError):
    """An alert action its state refuses (acknowledged twice, a resolved alert)."""

    status = 409
    title = "Conflicts with the alert's state"


class Conflict(GatewayError):
    status = 409
    title = "Idempotency-Key reused with a different body"


class RegistryConflict(GatewayError):
    status = 409
    title = "Conflicts with the registry"


class TooLarge(GatewayError):
    status = 413
    title = "Content too large"


class UnsupportedMedia(GatewayError):
    status = 415
    title = "Unsupported media type or encoding"


class NothingValid(GatewayError):
    status = 422
    title = "Nothing valid in the upload"

    def __init__(self, code: str, detail: str, rejected: Sequence[Rejection] = ()) -> None:
        super().__init__(code, detail)
        self.rejected = tuple(rejected)


class TransactionRefused(NothingValid):
    """A FHIR transaction with a refused entry: all or nothing, so nothing was taken."""

    title = "Transaction refused"


class RateLimited(GatewayError):
    status = 429
    title = "Too many requests"

    def __init__(self, code: str, detail: str, *, retry_after_s: int) -> None:
        super().__init__(code, detail)
        self.retry_after_s = retry_after_s


class Unavailable(GatewayError):
    status = 503
    title = "Kafka unavailable"

    def __init__(self, code: str, detail: str, *, retry_after_s: int) -> None:
        super().__init__(code, detail)
        self.retry_after_s = retry_after_s


class RegistryUnavailable(Unavailable):
    """The device registry is enforced but was never loaded: Kafka is not the cause."""

    title = "Device registry unavailable"


class AuditUnavailable(Unavailable):
    """The read API cannot record reads (its audit queue is full): no read off the record."""

    title = "Read audit unavailable"

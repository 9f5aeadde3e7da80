"""Metrics both front doors share: refusals of the HTTP layer, the request tally, the
per-route request middleware, the registry's freshness and the audit queue."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REFUSALS = Counter(
    "vitals_http_refusals_total",
    "Requests refused by the HTTP layer before the app (frontdoor/protocol.py), by code: "
    "malformed_http, bad_host, unsupported_transfer_coding, headers_too_large, header_timeout,"
    " body_timeout, too_many_connections",
    ["code"],
)


class RequestTally:
    """Requests started and answered in full, per process: logged when the server stops.

    A graceful stop must leave `unanswered` at 0. A connection the server closed before
    it read a request (still in the listen backlog at SIGTERM) never starts one here.
    """

    def __init__(self) -> None:
        self.started = 0
        self.answered = 0

    @property
    def unanswered(self) -> int:
        return self.started - self.answered

    def summary(self) -> dict[str, int]:
        return {
            "requests_started": self.started,
            "requests_answered": self.answered,
            "requests_unanswered": self.unanswered,
        }


TALLY = RequestTally()


class RequestMetrics:
    """Counts every HTTP request by its route template (not the raw path: bounded labels).

    Each front door passes its own series (vitals_gateway_…, vitals_api_…).
    `route` names the route of an app that is one route (the gateway's upload path);
    otherwise the router's match says, or "unmatched".
    """

    def __init__(
        self,
        app: ASGIApp,
        requests: Counter,
        seconds: Histogram,
        route: str | None = None,
    ) -> None:
        self.app = app
        self.requests = requests
        self.seconds = seconds
        self.route = route
        # (route, status) -> the two series' children: labels() takes a lock and builds
        # a key on every call, and the set of routes and statuses is small.
        self._series: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app fails before answering
        started = time.perf_counter()
        TALLY.started += 1

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                TALLY.answered += 1

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = str(self.route or getattr(scope.get("route"), "path", "unmatched"))
            series = self._series.get((route, status))
            if series is None:
                labels = (route, str(status))
                series = self.requests.labels(*labels), self.seconds.labels(*labels)
                self._series[(route, status)] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


REGISTRY_REFRESHES = Counter(
    "vitals_gateway_registry_refreshes_total",
    "Loads of keys and devices from the database, by outcome (ok, failed)",
    ["outcome"],
)
REGISTRY_LOADED_AT = Gauge(
    "vitals_gateway_registry_loaded_timestamp_seconds",
    "When the registry in memory was last loaded (0: never; it serves the last good copy)",
)
REGISTRY_AGE = Gauge(
    "vitals_registry_age_seconds",
    "Age of the registry in memory (gateway: keys and devices; reader: reader keys), from"
    " its last load, or from start while never loaded; /readyz is 503 past"
    " VITALS_REGISTRY_MAX_AGE_S",
    ["registry"],
)
REGISTRY_ROWS_SKIPPED = Counter(
    "vitals_registry_rows_skipped_total",
    "Registry rows not loaded because a time in them is outside the accepted range (a row"
    " written behind the API's back), by table; the rest of the registry loads",
    ["table"],
)
AUDIT_RECORDS = Counter(
    "vitals_gateway_audit_records_total",
    "Audit records by fate (written, dropped: the queue was full while the database was down)",
    ["fate"],
)
AUDIT_PENDING = Gauge("vitals_gateway_audit_pending", "Audit records waiting to be written")

"""The gateway's own Prometheus metrics (those both front doors share: frontdoor/metrics.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "vitals_gateway_requests_total", "HTTP requests by route and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "vitals_gateway_request_seconds",
    "Time from request start to the end of the answer, by route and status",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPLOADS = Counter(
    "vitals_gateway_uploads_total",
    "POST /v1/readings by outcome (accepted, replayed, or the refusal's code)",
    ["outcome"],
)
_UPLOADS_BY_OUTCOME: dict[str, Any] = {}


def count_upload(outcome: str) -> None:
    """UPLOADS for `outcome`, its child kept: labels() takes a lock and builds a key."""
    child = _UPLOADS_BY_OUTCOME.get(outcome)
    if child is None:
        child = _UPLOADS_BY_OUTCOME[outcome] = UPLOADS.labels(outcome)
    child.inc()


READINGS_ACCEPTED = Counter(
    "vitals_gateway_readings_accepted_total", "Readings accepted into Kafka"
)
READINGS_REJECTED = Counter(
    "vitals_gateway_readings_rejected_total", "Readings rejected item by item, by code", ["code"]
)
PRODUCE_SECONDS = Histogram(
    "vitals_gateway_produce_seconds",
    "Time from send to Kafka acknowledgement (acks=all)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

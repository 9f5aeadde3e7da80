"""Outages of a sink's dependencies (database, broker): backoff, readiness, quiet logs.

A sink that cannot make a batch durable keeps it (see sinks.durable) and tries again
after a growing delay. Meanwhile /readyz answers 503. The log gets the first failure, a
reminder at most once a minute, and the recovery with the outage's length: an outage of
an hour is a handful of lines, not thousands.
"""

from __future__ import annotations

import logging
import random
import time

import asyncpg
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 30.0
REMIND_EVERY_S = 60.0

FAILURES = Counter(
    "vitals_sink_failures_total",
    "Failed attempts to reach the database or broker (each is retried)",
    ["stage"],
)
UP = Gauge("vitals_sink_dependencies_up", "1 while the last attempt succeeded", ["stage"])


class Outage:
    """The health of one sink's dependencies, as seen by its last attempts."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        # Unknown until the first attempt: not ready before something answered.
        self.up = False
        self._since: float | None = None
        self._failures = 0
        self._delay = INITIAL_DELAY_S
        self._last_log = 0.0
        UP.labels(stage).set(0)

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        now = time.monotonic()
        FAILURES.labels(self.stage).inc()
        UP.labels(self.stage).set(0)
        self.up = False
        self._failures += 1
        if self._since is None:
            self._since = now
            self._remind(exc, now, "dependency unavailable, retrying")
        elif now - self._last_log >= REMIND_EVERY_S:
            self._remind(exc, now, "dependency still unavailable")
        delay = self._delay
        self._delay = min(MAX_DELAY_S, self._delay * 2)
        # Jitter: a fleet of sinks must not hammer a recovering database in step.
        return delay * random.uniform(0.8, 1.2)

    def succeeded(self) -> None:
        if self._since is not None:
            log.info(
                "dependency back",
                extra={
                    "stage": self.stage,
                    "failures": self._failures,
                    "outage_s": round(time.monotonic() - self._since, 1),
                },
            )
        self._since = None
        self._failures = 0
        self._delay = INITIAL_DELAY_S
        self.up = True
        UP.labels(self.stage).set(1)

    def _remind(self, exc: BaseException, now: float, message: str) -> None:
        self._last_log = now
        assert self._since is not None
        log.warning(
            message,
            extra={
                "stage": self.stage,
                "error": describe(exc),
                "failures": self._failures,
                "outage_s": round(now - self._since, 1),
            },
        )


def describe(exc: BaseException) -> str:
    """The error without its message when the message may quote stored values."""
    if isinstance(exc, asyncpg.PostgresError):
        # Server messages can quote row data (patient ids); the SQLSTATE says enough.
        return f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    return f"{type(exc).__name__}: {exc}"[:300]

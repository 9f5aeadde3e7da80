"""Per-gateway token buckets: `rate_per_s` requests a second on average, bursts of `burst`.

In memory, per replica: behind N replicas a gateway gets up to N times the rate. That is
the point of the limit (one misbehaving gateway must not starve the others on a replica),
not an exact global quota, which would need a shared store on every request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when a token was taken; else the seconds until one will be there."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s


def retry_after_s(wait_s: float) -> int:
    """Retry-After is whole seconds (RFC 9110); never 0, which would invite a hot loop."""
    return max(1, math.ceil(wait_s))

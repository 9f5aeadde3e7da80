"""Per-client token buckets: `rate_per_s` requests a second on average, bursts of `burst`.

The gateway keeps one per gateway; the read API one per reader key for requests and one
for the rows it returns (a cost known only after the read: `charge`).

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

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when `cost` tokens were taken; else the seconds until they will be there.
        cost=0 asks whether the bucket is out of debt (see `charge`)."""
        now = self._clock()
        tokens = self._refilled(key, now)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate_per_s

    def charge(self, key: str, cost: float) -> None:
        """Take `cost` tokens after the fact, into debt if need be: for a cost known only
        once the work is done (the rows a read returned)."""
        now = self._clock()
        self._buckets[key] = (self._refilled(key, now) - cost, now)

    def _refilled(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate_per_s)


def retry_after_s(wait_s: float) -> int:
    """Retry-After is whole seconds (RFC 9110); never 0, which would invite a hot loop."""
    return max(1, math.ceil(wait_s))

"""Adaptive batch size: how many messages the readings sink polls at once.

Large batches amortise the transaction and the commit; but a batch that takes too long
delays everything behind it and, on a failure, is a lot to redo. So the size grows while
full batches commit within the target time, and halves when one takes longer.
"""

from __future__ import annotations

import math

from prometheus_client import Gauge

from vitals.errors import ConfigError

LIMIT = Gauge("vitals_sink_batch_limit", "Messages the sink polls at most per batch", ["stage"])

GROWTH = 1.5


class BatchSizer:
    """Callable for ConsumerLoop(max_records=...); told each batch's size and time."""

    def __init__(self, low: int, high: int, target_s: float, *, stage: str = "sink") -> None:
        if not 1 <= low <= high:
            raise ConfigError(f"sink batch sizes need 1 <= min <= max, got {low} and {high}")
        if target_s <= 0:
            raise ConfigError(f"sink batch target must be positive, got {target_s}")
        self.low, self.high, self.target_s = low, high, target_s
        self.size = low
        self._stage = stage
        LIMIT.labels(stage).set(self.size)

    def __call__(self) -> int:
        return self.size

    def observe(self, records: int, seconds: float) -> None:
        """A batch of `records` messages was made durable in `seconds`."""
        if seconds > self.target_s:
            self.size = max(self.low, self.size // 2)
        elif records >= self.size:
            # Only full batches say "there is more waiting"; a partial one says we are
            # keeping up, and growing then would only buy latency.
            self.size = min(self.high, math.ceil(self.size * GROWTH))
        LIMIT.labels(self._stage).set(self.size)

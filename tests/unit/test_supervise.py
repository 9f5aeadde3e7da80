"""vitals/supervise.py: a background task that raises is logged, counted and restarted."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from vitals.logs import JsonFormatter
from vitals.supervise import supervise


def _failures(task: str) -> float:
    return REGISTRY.get_sample_value("vitals_background_task_failures_total", {"task": task}) or 0


async def test_a_failing_task_is_logged_counted_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def flaky() -> None:
        starts.append(loop.time())
        if len(starts) < 3:
            raise KeyError("p-00017")  # a message that could carry an identity

    before = _failures("unit-flaky")
    await asyncio.wait_for(supervise("unit-flaky", flaky, first_s=0.05, max_s=1), 5)
    assert len(starts) == 3  # two failures, then it returned: done, not restarted again
    assert _failures("unit-flaky") == before + 2
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the backoff doubles
    logs = [JsonFormatter().format(r) for r in caplog.records]
    assert len(logs) == 2 and all('"error":"KeyError"' in line for line in logs)
    assert all("test_supervise.py" in line and "p-00017" not in line for line in logs)


async def test_cancelling_stops_it_without_a_failure() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    before = _failures("unit-forever")
    task = supervise("unit-forever", forever)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _failures("unit-forever") == before

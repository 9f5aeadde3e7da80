"""Background tasks that never die silently.

A task made with bare `asyncio.create_task` that raises just stops: its exception waits,
unread, in a Task nobody awaits until shutdown. That is how a registry refresher once
stopped on one bad row while `/readyz` stayed green (issue 13). Every long-running task of
the runtime (registry reloads, the audit writer, the producer's deadline sweep, the
consumers' lag timer) is started with `supervise` instead: an exception is logged (its
type and where it was raised, never its message, which may carry an identifier), counted
in `vitals_background_task_failures_total{task}`, and the task is started again after a
backoff that doubles up to `BACKOFF_MAX_S`. A task that returns is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from vitals.logs import exception_fields

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0

TASK_FAILURES = Counter(
    "vitals_background_task_failures_total",
    "Background tasks that raised, by task; each is logged and started again after a backoff",
    ["task"],
)


def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    first_s: float = BACKOFF_FIRST_S,
    max_s: float = BACKOFF_MAX_S,
) -> asyncio.Task[None]:
    """`run()` in a task named `name`, started again whenever it raises; cancel the task
    to stop it. `run` must be safe to start again (it holds no half-done work)."""
    return asyncio.create_task(_supervised(name, run, first_s, max_s), name=name)


async def _supervised(
    name: str, run: Callable[[], Awaitable[None]], first_s: float, max_s: float
) -> None:
    loop = asyncio.get_running_loop()
    delay = first_s
    while True:
        started = loop.time()
        try:
            await run()
            return
        except Exception as exc:  # noqa: BLE001 - the point: any failure, logged and counted
            if loop.time() - started > max_s:
                delay = first_s  # it ran well for a while: a new failure, not the same one
            TASK_FAILURES.labels(name).inc()
            log.error(
                "background task failed; restarting",
                extra={"task": name, "restart_in_s": delay, **exception_fields(exc)},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_s)

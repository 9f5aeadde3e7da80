"""One scenario: a steady load, one injected failure, then the checks against the ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tests.faults.checks import TopicReader, Verdict, settle
from tests.faults.conftest import record
from tests.faults.load import LoadGenerator, LoadPlan, Upload
from tests.support.stages import Stages
from vitals.settings import Settings

# The bound on recovery the suite states: a consumer restarted after kill -9 waits out its
# old member's session (10 s) before the group rebalances, a broker node killed holds its
# leaderships until the controller fences it (its 9 s session), and a sink backs off up
# to a few seconds after an outage; 60 s leaves room for this shared 2-core machine.
RECOVERY_BOUND_S = 60.0

T = TypeVar("T")
Injection = Callable[[], Awaitable[float]]  # returns time.monotonic() when it ended


async def after(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def nothing() -> float:
    return time.monotonic()


async def run(
    name: str,
    injection_text: str,
    stages: Stages,
    settings: Settings,
    alerts: TopicReader,
    inject: Injection,
    plan: LoadPlan | None = None,
    bound_s: float = RECOVERY_BOUND_S,
    prefix: str | None = None,
    extra_uploads: list[Upload] | None = None,
) -> tuple[Verdict, LoadGenerator]:
    """Load, inject, then judge; `extra_uploads` are posted by the injection itself and
    judged with the load's ledger."""
    plan = plan or LoadPlan()
    generator = LoadGenerator(stages.gateway_url, plan, prefix)
    load = asyncio.create_task(generator.run())
    try:
        ended = await inject()
    except BaseException:
        load.cancel()
        raise
    ledger = await load
    ledger.uploads += extra_uploads or []
    rate = plan.patients / plan.interval_s
    load_text = (
        f"{plan.patients} patients, {rate:g} uploads/s × 24 readings, "
        f"{plan.minutes} uploads each"
        + (", every upload sent twice" if plan.duplicate_every_upload else "")
    )
    verdict = Verdict(name, load_text, injection_text)
    await settle(verdict, ledger, settings, alerts, since=ended, bound_s=bound_s)
    record(verdict)
    return verdict, generator


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """Process control blocks (waits on processes, polls /readyz): keep the load going."""
    return await asyncio.to_thread(fn, *args)


async def restart(stages: Stages, name: str) -> float:
    """Start a stage and wait until it is ready; returns when it was started."""
    started = time.monotonic()
    await in_thread(stages.start, name)
    await in_thread(stages.wait_ready, [name])
    return started

"""Process lifetimes: SIGTERM/SIGINT become an event the run loops watch."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import Any, NoReturn

from prometheus_client import Gauge, Histogram

GC_PAUSE = Histogram(
    "vitals_gc_pause_seconds",
    "Cyclic garbage collections: how long each held the process (and its event loop)",
    ["generation"],
    buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1.0, 2.5, 5.0),
)
GC_LONGEST = Gauge(
    "vitals_gc_longest_pause_seconds",
    "The longest collection since the start: the heartbeat waits behind it",
)

# The cyclic garbage collector's first generation runs every 700 allocations by default.
# The processor allocates a state per reading and holds millions of them in its windows,
# so each pass walks a large young generation: measured on the processor's engine (bench
# fleet data), collection took ~27 % of the time at the default, ~7 % at 50,000. Our
# objects rarely form cycles; reference counting frees them either way.
GC_FIRST_GENERATION = 50_000


def tune_gc() -> None:
    """Fewer, larger young collections; start-up objects (modules, settings) moved out of
    the collector's way for good."""
    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])
    gc.freeze()
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


_started = 0.0
_longest = 0.0


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    """Each collection's pause: it runs on the event loop's thread, so a long one delays
    the consumer's heartbeats (the session must outlast the longest)."""
    global _started, _longest
    if phase == "start":
        _started = time.perf_counter()
        return
    pause = time.perf_counter() - _started
    GC_PAUSE.labels(str(info["generation"])).observe(pause)
    if pause > _longest:
        _longest = pause
        GC_LONGEST.set(pause)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; the loop finishes its batch, commits, leaves."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if stop was requested meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def exit_now() -> NoReturn:
    """Leave the process at once, status 0, once a stage has stopped cleanly (offsets
    committed, output flushed, group left): the logs are flushed and the rest is left to
    the operating system. Freeing a large state object by object, then the interpreter's
    last collection, took 2.5 s past leaving the group at 10,000 patients
    (docs/benchmarks.md), inside Kubernetes' grace period. For a command's own process
    only: never from code that tests run in-process."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

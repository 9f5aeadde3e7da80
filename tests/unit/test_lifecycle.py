"""Process lifetimes: the garbage collector's pauses are measured."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from vitals import lifecycle


def test_each_collection_is_timed_and_the_longest_kept() -> None:
    lifecycle.tune_gc()
    lifecycle.tune_gc()  # once per process, however often called
    assert gc.callbacks.count(lifecycle._time_collection) == 1  # noqa: SLF001
    before = REGISTRY.get_sample_value("vitals_gc_pause_seconds_count", {"generation": "2"}) or 0
    garbage = [[i] for i in range(200_000)]
    for pair in zip(garbage, garbage[1:], strict=False):
        pair[0].append(pair[1])  # something for the full collection to walk
    gc.collect()
    after = REGISTRY.get_sample_value("vitals_gc_pause_seconds_count", {"generation": "2"})
    assert after == before + 1
    longest = REGISTRY.get_sample_value("vitals_gc_longest_pause_seconds")
    assert longest is not None and longest > 0

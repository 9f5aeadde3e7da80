"""Event-time windows: order, duplicates, the horizon, and recompute from a late reading.

Most tests use a checkpoint after every reading (`every=1`), where what is held and what
is stepped again is exact; the property tests also run with sparse checkpoints, which
must give the same states and hold the same samples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.windows import EventWindow, Sample

HORIZON = 1_000


def running_sum(state: int, sample: Sample, prev_t: int | None) -> int:
    return state + int(sample.v)


def test_samples_are_held_in_event_time_order_whatever_the_arrival_order() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    for t in (300, 100, 200):
        result = window.insert([Sample(t, "d", t)])
        assert result.first is not None
        window.recompute(result.first, running_sum)
    assert [s.t for s in window.samples] == [100, 200, 300]
    assert window.state == 600


def test_insert_reports_the_earliest_changed_index() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    window.recompute(
        window.insert([Sample(t, "d", 1) for t in (10, 20, 30, 40)]).first or 0, running_sum
    )
    assert window.insert([Sample(35, "d", 1), Sample(15, "d", 1)]).first == 1
    assert window.insert([Sample(50, "d", 1)]).first == 6


def test_same_time_and_device_is_a_duplicate_but_another_device_is_not() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    window.insert([Sample(10, "a", 1)])
    again = window.insert([Sample(10, "a", 1), Sample(10, "a", 1), Sample(10, "b", 2)])
    assert (again.added, again.duplicates, again.conflicts) == (1, 2, 0)
    # A retry carrying the same reading twice within one upload counts once as well.
    within = window.insert([Sample(20, "a", 1), Sample(20, "a", 1)])
    assert (within.added, within.duplicates) == (1, 1)
    assert [(s.t, s.device_id) for s in window.samples] == [(10, "a"), (10, "b"), (20, "a")]


def test_a_later_different_value_for_a_held_key_is_a_conflict_and_the_first_stays() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    window.recompute(window.insert([Sample(10, "a", 97)]).first or 0, running_sum)
    later = window.insert([Sample(10, "a", 80), Sample(10, "a", 97)])
    assert (later.first, later.added, later.duplicates, later.conflicts) == (None, 0, 1, 1)
    # Within one upload, too: the first in arrival order is the one placed.
    both = window.insert([Sample(20, "a", 50), Sample(20, "a", 60)])
    assert (both.added, both.conflicts) == (1, 1)
    window.recompute(both.first or 0, running_sum)
    assert [(s.t, s.v) for s in window.samples] == [(10, 97), (20, 50)]
    assert window.state == 147
    # Another metric at the same time and device is another reading.
    other = window.insert([Sample(10, "a", 80, "heart_rate")])
    assert (other.added, other.conflicts) == (1, 0)


def test_a_conflict_older_than_the_horizon_is_too_old_not_placed() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    window.recompute(window.insert([Sample(0, "a", 97)]).first or 0, running_sum)
    window.recompute(window.insert([Sample(5_000, "a", 97)]).first or 0, running_sum)
    assert window.evict() == 1
    # The key's first value is evicted with it; the conflicting value is not placed either.
    late = window.insert([Sample(0, "a", 80)])
    assert (late.added, late.conflicts, late.too_old) == (0, 0, 1)
    assert [(s.t, s.v) for s in window.samples] == [(5_000, 97)]


def test_readings_older_than_the_horizon_behind_the_newest_are_not_placed() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    window.insert([Sample(5_000, "d", 1)])
    result = window.insert([Sample(3_999, "d", 1), Sample(4_000, "d", 1)])
    assert (result.added, result.too_old) == (1, 1)
    assert window.cutoff == 4_000


def test_recompute_starts_from_the_checkpoint_before_the_late_reading() -> None:
    calls: list[int] = []

    def counting(state: int, sample: Sample, prev_t: int | None) -> int:
        calls.append(sample.t)
        return state + int(sample.v)

    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    first = window.insert([Sample(t, "d", 1) for t in (10, 20, 30, 40)]).first
    window.recompute(first or 0, counting)
    calls.clear()
    late = window.insert([Sample(25, "d", 100)])
    window.recompute(late.first or 0, counting)
    assert calls == [25, 30, 40]  # 10 and 20 are not run again
    assert window.state == 104


def test_eviction_keeps_the_state_of_what_it_dropped() -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=1)
    window.recompute(
        window.insert([Sample(t, "d", 1) for t in (0, 500, 900)]).first or 0, running_sum
    )
    result = window.insert([Sample(1_600, "d", 1)])
    window.recompute(result.first or 0, running_sum)
    assert window.evict() == 2  # 0 and 500 are older than 1600 - 1000
    assert [s.t for s in window.samples] == [900, 1_600]
    assert window.state == 4
    # A late reading just inside the horizon runs from the base kept at eviction.
    late = window.insert([Sample(700, "d", 10)])
    assert late.first == 0
    window.recompute(0, running_sum)
    assert window.state == 14


@pytest.mark.parametrize("every", [1, 3, 256])
@given(st.lists(st.tuples(st.integers(0, 20_000), st.sampled_from("ab")), max_size=60))
def test_a_window_never_holds_more_than_its_horizon(
    every: int, arrivals: list[tuple[int, str]]
) -> None:
    window: EventWindow[int] = EventWindow(HORIZON, 0, every=every)
    newest = None
    for t, device in arrivals:
        result = window.insert([Sample(t, device, 1)])
        if result.first is not None:
            window.recompute(result.first, running_sum)
        window.evict()
        newest = t if newest is None else max(newest, t)
        held = [s.t for s in window.samples]
        assert held == sorted(held)
        assert held[-1] == newest
        assert held[-1] - held[0] <= HORIZON


def trail(state: tuple, sample: Sample, prev_t: int | None) -> tuple:
    """A state that is the whole sequence stepped: any step out of order shows."""
    return (*state, (sample.t, sample.device_id, prev_t))


def replayed(samples: list[Sample]) -> tuple:
    state: tuple = ()
    prev_t = None
    for sample in sorted(samples, key=lambda s: (s.t, s.device_id, s.v, s.metric)):
        state, prev_t = trail(state, sample, prev_t), sample.t
    return state


batches = st.lists(
    st.lists(st.tuples(st.integers(0, 5_000), st.sampled_from("ab")), min_size=1, max_size=8),
    max_size=25,
)


@pytest.mark.parametrize("every", [1, 3, 256])
@given(batches)
def test_stepping_from_the_earliest_new_sample_equals_a_full_recompute(
    every: int, arrivals: list[list[tuple[int, str]]]
) -> None:
    """Uploads in order (appended, only the new samples stepped), late, overlapping,
    repeated or too old, with eviction: the state is always that of running every sample
    ever placed from the start, in event-time order."""
    window: EventWindow[tuple] = EventWindow(HORIZON, (), every=every)
    placed: set[Sample] = set()
    for batch in arrivals:
        before = list(window.samples)
        result = window.insert([Sample(t, device, 1) for t, device in batch])
        new = [s for s in window.samples if s not in set(before)]
        assert result.added == len(new)
        if result.first is not None:
            stepping_only = len(window) - len(window.samples)  # kept to step from, not held
            assert result.first - stepping_only == min(window.samples.index(s) for s in new)
            window.recompute(result.first, trail)
        placed |= set(window.samples)
        assert window.state == replayed(list(placed))
        window.evict()

"""Per-series event-time windows: readings in event-time order, each with a state checkpoint.

A window belongs to one series (one patient, one metric). It keeps the readings of the
last `horizon_ms` of event time (the longest detector window plus the allowed lateness,
measured back from the newest reading) and, after each reading, the detectors' state.
A late reading is put in its place and the detectors run again from there, starting from
the checkpoint just before it; in-order readings only run the new ones.

One value per (time, device, metric): the first to arrive is the reading of record, as in
the database (docs/wire-format.md, conflicting values). A later reading with that key is a
duplicate when its value is the same and a conflict when it differs; neither is placed, so
detections run on the values the sink stores.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")


@dataclass(slots=True, order=True, unsafe_hash=True)
class Sample:
    """One reading of a series: event time (ms), the device that measured it, the value.

    `metric` tells readings apart in series fed by several metrics (NEWS2). Not frozen (a
    frozen dataclass costs four times as much to build, and one is built per reading), but
    never changed once made.
    """

    t: int
    device_id: str
    v: float
    metric: str = ""


# Sample's own order as a plain tuple: comparing tuples is several times cheaper than the
# dataclass's generated __lt__, and placing samples is the window's hot path.
_order = operator.attrgetter("t", "device_id", "v", "metric")


@dataclass(frozen=True, slots=True)
class Inserted:
    first: int | None  # index of the earliest new sample; None when nothing was new
    added: int
    duplicates: int  # same (t, device, metric) and value already held: retried uploads
    conflicts: int  # same (t, device, metric) held with another value: the first one stays
    too_old: int  # older than the horizon behind the newest reading


# step(state before, sample, event time of the sample before or None) -> state after
Step = Callable[[S, Sample, int | None], S]


class EventWindow(Generic[S]):
    """One series' samples in event-time order, with the state after each sample."""

    __slots__ = ("horizon_ms", "_samples", "_keys", "_states", "_base", "_base_t")

    def __init__(self, horizon_ms: int, initial: S) -> None:
        self.horizon_ms = horizon_ms
        self._samples: list[Sample] = []
        # (t, device, metric) -> the value of record, to tell a repeat from a conflict.
        self._keys: dict[tuple[int, str, str], float] = {}
        self._states: list[S | None] = []
        # State after the last evicted sample (the start of every recompute from 0).
        self._base: S = initial
        self._base_t: int | None = None

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def samples(self) -> tuple[Sample, ...]:
        return tuple(self._samples)

    @property
    def frontier(self) -> int | None:
        """Event time of the newest reading seen (kept across evictions)."""
        return self._samples[-1].t if self._samples else self._base_t

    @property
    def cutoff(self) -> int | None:
        """Readings before this event time are no longer held."""
        frontier = self.frontier
        return None if frontier is None else frontier - self.horizon_ms

    @property
    def state(self) -> S:
        """The state after the newest sample."""
        if self._states:
            last = self._states[-1]
            assert last is not None, "recompute() after insert()"
            return last
        return self._base

    def insert(self, samples: Iterable[Sample]) -> Inserted:
        """Add new samples in event-time order; call recompute(result.first) next."""
        held = self._keys
        fresh: list[Sample] = []
        duplicates = conflicts = 0
        newest: int | None = None
        for sample in samples:
            key = (sample.t, sample.device_id, sample.metric)
            first = held.get(key)
            if first is not None:  # held before, or earlier in this upload
                if first == sample.v:
                    duplicates += 1
                else:
                    conflicts += 1
                continue
            held[key] = sample.v
            fresh.append(sample)
            if newest is None or sample.t > newest:
                newest = sample.t
        if newest is None:
            return Inserted(None, 0, duplicates, conflicts, 0)
        frontier = self.frontier
        cutoff = (newest if frontier is None else max(frontier, newest)) - self.horizon_ms
        # The state before a sample older than the cutoff may already be evicted: such a
        # sample cannot be placed, so it is counted and left out (the sinks still store it).
        kept = [s for s in fresh if s.t >= cutoff]
        if len(kept) < len(fresh):
            for sample in fresh:
                if sample.t < cutoff:
                    del held[(sample.t, sample.device_id, sample.metric)]
        too_old = len(fresh) - len(kept)
        if not kept:
            return Inserted(None, 0, duplicates, conflicts, too_old)
        kept.sort(key=_order)
        placed, states = self._samples, self._states
        if not placed or _order(placed[-1]) <= _order(kept[0]):
            first = len(placed)  # in order, the common case: all after what is held
            placed.extend(kept)
            states.extend([None] * len(kept))
            return Inserted(first, len(kept), duplicates, conflicts, too_old)
        first = len(placed)
        for sample in kept:
            index = bisect.bisect_right(placed, _order(sample), key=_order)
            placed.insert(index, sample)
            states.insert(index, None)
            first = min(first, index)
        return Inserted(first, len(kept), duplicates, conflicts, too_old)

    def recompute(self, start: int, step: Step[S]) -> None:
        """Run `step` over the samples from `start` on, from the checkpoint before it."""
        state = self._base if start == 0 else self._states[start - 1]
        prev_t = self._base_t if start == 0 else self._samples[start - 1].t
        assert state is not None
        for index in range(start, len(self._samples)):
            sample = self._samples[index]
            state = step(state, sample, prev_t)
            self._states[index] = state
            prev_t = sample.t

    def evict(self) -> int:
        """Drop samples older than the horizon behind the newest; returns how many."""
        cutoff = self.cutoff
        if cutoff is None:
            return 0
        count = bisect.bisect_left(self._samples, cutoff, key=lambda s: s.t)
        if count == 0:
            return 0
        last_state = self._states[count - 1]
        assert last_state is not None
        self._base, self._base_t = last_state, self._samples[count - 1].t
        for sample in self._samples[:count]:
            del self._keys[(sample.t, sample.device_id, sample.metric)]
        del self._samples[:count]
        del self._states[:count]
        return count

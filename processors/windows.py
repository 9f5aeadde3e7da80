"""Per-series event-time windows: readings in event-time order, in typed arrays, with
the detectors' state checkpointed every `every` readings.

A window belongs to one series (one patient, one metric). It keeps the readings of the
last `horizon_ms` of event time (the longest detector window plus the allowed lateness,
measured back from the newest reading) and the detectors' state after the newest one. A
late reading is put in its place and the detectors run again from there, starting from
the checkpoint before it: readings between that checkpoint and the late one are stepped
again *quietly* (the caller's `Rerun` discards what they emit and puts back what they
changed), so the state at the late reading is the one a checkpoint per reading would
have held. In-order readings only run the new ones.

Why columns and sparse checkpoints: a reading held as a Python object with a state
object after it cost ~650 bytes; as a column entry (int32 time relative to the window's
origin, a value as tenths in an int32 where that is exact, a device and a metric index)
it costs 8 (int16 tenths) to 14 bytes, and a checkpoint every 512 readings adds a few.

One value per (time, device, metric): the first to arrive is the reading of record, as in
the database (docs/wire-format.md, conflicting values). A later reading with that key is a
duplicate when its value is the same and a conflict when it differs; neither is placed, so
detections run on the values the sink stores.
"""

from __future__ import annotations

import bisect
import math
import operator
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

S = TypeVar("S")

EVERY = 512  # readings between checkpoints: memory against the quiet steps of a late one
_INT32 = 2**31 - 1


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


class Rerun(Protocol[S]):
    """How readings already stepped are stepped again before a late one: `begin()` gives
    the step to use (emitting nothing), `end()` undoes what it changed besides the state."""

    def begin(self) -> Step[S]: ...
    def end(self) -> None: ...


class Values:
    """A column of floats, as tenths in the narrowest integer that holds them exactly
    (vital signs are whole numbers or have one decimal: int16 up to 3276.7), widened to
    int32 and then float64 when a value needs it. Read back bit for bit."""

    __slots__ = ("_a",)

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._a: array[Any] = array("h")
        self.extend(values)

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, i: int) -> float:
        return self._a[i] if self._a.typecode == "d" else self._a[i] / 10

    @staticmethod
    def _tenths(v: float, limit: float) -> int | None:
        """v as tenths within +-limit if that is exact, else None (NaN, infinities,
        -0.0 and finer decimals are kept as float64)."""
        if not -limit < v < limit or (v == 0 and math.copysign(1.0, v) < 0):
            return None
        tenths = round(v * 10)
        return tenths if tenths / 10 == v else None

    def insert(self, i: int, v: float) -> None:
        code = self._a.typecode
        if code != "d":
            tenths = self._tenths(v, 3276.7 if code == "h" else 2e8)
            if tenths is None and code == "h" and self._tenths(v, 2e8) is not None:
                self._a = array("i", self._a)
                code = "i"
                tenths = self._tenths(v, 2e8)
            if tenths is None:
                self._a = array("d", [x / 10 for x in self._a])
            else:
                self._a.insert(i, tenths)
                return
        self._a.insert(i, v)

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.insert(len(self._a), v)

    def drop(self, count: int) -> None:
        del self._a[:count]

    def nbytes(self) -> int:
        return self._a.buffer_info()[1] * self._a.itemsize


class EventWindow(Generic[S]):
    """One series' samples in event-time order, with checkpoints of the state."""

    __slots__ = (
        "horizon_ms",
        "every",
        "_origin",
        "_t",
        "_v",
        "_dev",
        "_met",
        "_devices",
        "_metrics",
        "_marks",
        "_mark_at",
        "_last",
        "_tail",
        "_base",
        "_base_t",
        "_held_from",
    )

    def __init__(self, horizon_ms: int, initial: S, every: int = EVERY) -> None:
        self.horizon_ms = horizon_ms
        self.every = every
        self._origin: int | None = None  # event time of relative time 0
        self._t: array[int] = array("i")
        self._v = Values()
        # Index into _devices and _metrics; None while every sample has the first (one
        # device, one metric: most series), which saves two bytes a reading.
        self._dev: array[int] | None = None
        self._met: array[int] | None = None
        self._devices: list[str] = []
        self._metrics: list[str] = []
        # Checkpoints: index i -> the state after sample i, in index order.
        self._mark_at: list[int] = []
        self._marks: list[S] = []
        self._last: S | None = initial  # the state after the newest sample; None: stale
        # After an in-order insert: (index, state) of the newest sample before it, so
        # that stepping the new ones needs no checkpoint.
        self._tail: tuple[int, S] | None = None
        # State before sample 0 (after the last evicted one), and that sample's time.
        self._base: S = initial
        self._base_t: int | None = None
        # Samples before this time are kept only to be stepped again (not held: a repeat
        # of one is too old, as it would be had it been evicted).
        self._held_from: int | None = None

    def __len__(self) -> int:
        return len(self._t)

    # --- reading the columns -------------------------------------------------------------

    def _time(self, i: int) -> int:
        assert self._origin is not None
        return self._origin + self._t[i]

    def _sample(self, i: int) -> Sample:
        assert self._origin is not None
        return Sample(
            self._origin + self._t[i],
            self._devices[self._dev[i] if self._dev is not None else 0],
            self._v[i],
            self._metrics[self._met[i] if self._met is not None else 0],
        )

    def _first_held(self) -> int:
        if self._held_from is None or self._origin is None:
            return 0
        return bisect.bisect_left(self._t, self._held_from - self._origin)

    @property
    def samples(self) -> tuple[Sample, ...]:
        """The samples held (those kept only to be stepped again are left out)."""
        return tuple(self._sample(i) for i in range(self._first_held(), len(self._t)))

    @property
    def frontier(self) -> int | None:
        """Event time of the newest reading seen (kept across evictions)."""
        return self._time(len(self._t) - 1) if self._t else self._base_t

    @property
    def cutoff(self) -> int | None:
        """Readings before this event time are no longer held."""
        frontier = self.frontier
        return None if frontier is None else frontier - self.horizon_ms

    @property
    def state(self) -> S:
        """The state after the newest sample."""
        assert self._last is not None, "recompute() after insert()"
        return self._last

    # --- placing samples -----------------------------------------------------------------

    def _held_value(self, sample: Sample) -> float | None:
        """The value of record for the sample's (t, device, metric), if held."""
        if self._origin is None or (self._held_from is not None and sample.t < self._held_from):
            return None
        rel = sample.t - self._origin
        if not -_INT32 <= rel <= _INT32:
            return None
        i = bisect.bisect_left(self._t, rel)
        while i < len(self._t) and self._t[i] == rel:
            held = self._sample(i)
            if held.device_id == sample.device_id and held.metric == sample.metric:
                return held.v
            i += 1
        return None

    def insert(self, samples: Iterable[Sample]) -> Inserted:
        """Add new samples in event-time order; call recompute(result.first) next."""
        seen: dict[tuple[int, str, str], float] = {}  # this upload's own
        fresh: list[Sample] = []
        duplicates = conflicts = 0
        newest: int | None = None
        for sample in samples:
            key = (sample.t, sample.device_id, sample.metric)
            first = seen.get(key)
            if first is None:
                first = self._held_value(sample)
            if first is not None:  # held before, or earlier in this upload
                if first == sample.v:
                    duplicates += 1
                else:
                    conflicts += 1
                continue
            seen[key] = sample.v
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
        too_old = len(fresh) - len(kept)
        if not kept:
            return Inserted(None, 0, duplicates, conflicts, too_old)
        kept.sort(key=_order)
        self._fit_origin(kept[0].t, kept[-1].t)
        n = len(self._t)
        self._tail = None
        if not n or _order(self._sample(n - 1)) <= _order(kept[0]):
            first = n  # in order, the common case: all after what is held
            if n and self._last is not None:
                self._tail = (n - 1, self._last)
            for sample in kept:
                self._put(n, sample)
                n += 1
        else:
            first = n
            for sample in kept:
                index = self._place(sample)
                self._put(index, sample)
                first = min(first, index)
        # Checkpoints at or after the first new sample no longer describe what precedes.
        cut = bisect.bisect_left(self._mark_at, first)
        del self._mark_at[cut:], self._marks[cut:]
        self._last = None
        return Inserted(first, len(kept), duplicates, conflicts, too_old)

    def _place(self, sample: Sample) -> int:
        """Index after every held sample that sorts at or before `sample`."""
        assert self._origin is not None
        rel = sample.t - self._origin
        i = bisect.bisect_left(self._t, rel)
        end = bisect.bisect_right(self._t, rel, lo=i)
        key = _order(sample)
        return bisect.bisect_right(range(i, end), key, key=lambda j: _order(self._sample(j))) + i

    def _put(self, i: int, sample: Sample) -> None:
        assert self._origin is not None
        self._t.insert(i, sample.t - self._origin)
        self._v.insert(i, sample.v)
        self._dev = _put_index(self._dev, i, _index(self._devices, sample.device_id), len(self._t))
        self._met = _put_index(self._met, i, _index(self._metrics, sample.metric), len(self._t))

    def _fit_origin(self, low: int, high: int) -> None:
        """Relative times are int32 (24 days): move the origin to the oldest time when
        new ones fall outside. A window slides for weeks; what it holds spans hours."""
        if self._origin is None:
            self._origin = low
            return
        if low - self._origin >= -_INT32 and high - self._origin <= _INT32:
            return
        origin = min(low, self._time(0)) if self._t else low
        shift = self._origin - origin
        self._t = array("i", [x + shift for x in self._t])
        self._origin = origin

    # --- stepping ------------------------------------------------------------------------

    def recompute(self, start: int, step: Step[S], rerun: Rerun[S] | None = None) -> None:
        """Run `step` over the samples from `start` on, from the checkpoint before it;
        the samples between that checkpoint and `start` are stepped with `rerun`'s step
        (with `step` when no rerun is given: a pure step needs none)."""
        cut = bisect.bisect_left(self._mark_at, start)
        tail, self._tail = self._tail, None
        if tail is not None and tail[0] == start - 1:
            begin, state = start, tail[1]
            prev_t: int | None = self._time(begin - 1)
        elif cut:
            begin, state = self._mark_at[cut - 1] + 1, self._marks[cut - 1]
            prev_t = self._time(begin - 1)
        else:
            begin, state, prev_t = 0, self._base, self._base_t
        del self._mark_at[cut:], self._marks[cut:]
        if begin < start:
            quiet = step if rerun is None else rerun.begin()
            try:
                state, prev_t = self._run(begin, start, quiet, state, prev_t)
            finally:
                if rerun is not None:
                    rerun.end()
        self._last, _ = self._run(start, len(self._t), step, state, prev_t)

    def _run(
        self, begin: int, end: int, step: Step[S], state: S, prev_t: int | None
    ) -> tuple[S, int | None]:
        marks, at = self._marks, self._mark_at
        last_mark = at[-1] if at else -1
        for index in range(begin, end):
            sample = self._sample(index)
            state = step(state, sample, prev_t)
            prev_t = sample.t
            if index - last_mark >= self.every:
                at.append(index)
                marks.append(state)
                last_mark = index
        return state, prev_t

    def evict(self) -> int:
        """Drop samples older than the horizon behind the newest, up to the last
        checkpoint among them (what follows it is kept to step from); returns how many."""
        cutoff = self.cutoff
        if cutoff is None or self._origin is None:
            return 0
        self._held_from = cutoff
        older = bisect.bisect_left(self._t, cutoff - self._origin)
        cut = bisect.bisect_left(self._mark_at, older)  # checkpoints after samples < older
        if cut == 0:
            return 0
        count = self._mark_at[cut - 1] + 1
        self._base, self._base_t = self._marks[cut - 1], self._time(count - 1)
        del self._t[:count]
        for column in (self._dev, self._met):
            if column is not None:
                del column[:count]
        self._v.drop(count)
        self._mark_at = [i - count for i in self._mark_at[cut:]]
        del self._marks[:cut]
        return count

    def nbytes(self) -> int:
        """The columns' buffers (the checkpoints' states are the tracks' to size)."""
        columns = [a for a in (self._t, self._dev, self._met) if a is not None]
        return self._v.nbytes() + sum(a.buffer_info()[1] * a.itemsize for a in columns)


def _index(names: list[str], name: str) -> int:
    """`name`'s index in a window's few devices or metrics (a series is fed by a handful
    of devices and at most NEWS2's seven metrics)."""
    try:
        return names.index(name)
    except ValueError:
        names.append(name)
        return len(names) - 1


def _put_index(column: array[int] | None, i: int, index: int, n: int) -> array[int] | None:
    """Insert `index` at `i` of an index column of (now) `n` samples; a column that does
    not exist yet stands for all zeros."""
    if column is None:
        if index == 0:
            return None
        column = array("B", bytes(n - 1))
    if index > 255 and column.typecode == "B":  # rare: many devices on one series
        column = array("H", column)
    column.insert(i, index)
    return column

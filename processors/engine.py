"""The processor's pure core: decoded uploads in, detections out. No Kafka, no clock.

State is kept per partition (the unit a processor is assigned, replays and drops), then per
series of a patient: one per metric that has a rule of its own (thresholds, sensor faults,
personal baseline: tracks.MetricTrack), one for NEWS2 (fed by its seven parameters) and
one for rhythm (rr_interval); each an event-time window whose samples carry its track's
state (windows.py, tracks.py, episodes.py). Which rules apply is the
patient's (rules.py: defaults, cohort, own overrides). Per (patient, device): the last
arrival for device silence (silence.py).

A detection is retrospective when its state change happened more than the allowed lateness
before the processor learned of it (the upload's arrival, or the processing time if the
processor lags): recorded, not paged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.news2 import PARAMETERS as NEWS2_PARAMETERS
from processors.news2 import News2Track, Scored, score_record
from processors.rhythm import RhythmTrack
from processors.rules import PatientRules, Rules
from processors.silence import DeviceSilence
from processors.tracks import Found, MetricTrack, Track
from processors.windows import EVERY, EventWindow, Sample
from vitals.contract import Detection, News2Score, Upload, alert_id

NEWS2 = "news2"
RHYTHM = "rhythm"
RR_METRIC = "rr_interval"


class Series:
    """One patient's series (a metric, or NEWS2's or rhythm's inputs): window and track."""

    __slots__ = ("patient_id", "track", "window", "last_arrival")

    def __init__(self, patient_id: str, track: Track, horizon_ms: int, every: int) -> None:
        self.patient_id = patient_id
        self.track = track
        self.window: EventWindow[Any] = EventWindow(horizon_ms, track.initial, every)
        self.last_arrival = 0

    @property
    def idle(self) -> bool:
        """Nothing pending or open: forgetting it loses nothing a future reading needs."""
        return self.track.idle(self.window.state) and all(m.is_quiet for m in self.track.machines)

    def add(self, samples: list[Sample]) -> tuple[list[Found], Counter[str]]:
        """Place an upload's samples and run the track from the earliest new one.

        Returns the state changes emitted, and counts of readings left out and of
        decisions late data contradicted.
        """
        counts: Counter[str] = Counter()
        inserted = self.window.insert(samples)
        counts["duplicate"] += inserted.duplicates
        counts["conflict"] += inserted.conflicts
        counts["beyond_horizon"] += inserted.too_old
        if inserted.first is None:
            return [], counts
        found: list[Found] = []
        track = self.track

        def step(state: Any, sample: Sample, prev_t: int | None) -> Any:
            return track.step(state, sample, prev_t, found)

        machines = track.machines
        conflicts = sum(m.conflicts for m in machines)
        self.window.recompute(inserted.first, step, QuietRerun(track))
        counts["late_conflict"] += sum(m.conflicts for m in machines) - conflicts
        self.window.evict()
        cutoff = self.window.cutoff
        if cutoff is not None:
            for machine in machines:
                machine.prune(cutoff)
        return found, counts


class QuietRerun:
    """Steps readings already stepped again (windows.Rerun): what they emit is dropped,
    and the logs and counters they touch are put back as they were, so that the late
    reading after them finds what a checkpoint per reading would have left."""

    __slots__ = ("track", "_saved")

    def __init__(self, track: Track) -> None:
        self.track = track
        self._saved: list[tuple[Any, ...]] = []

    def begin(self) -> Any:
        track = self.track
        self._saved = [(m, m.log.copy(), m.conflicts) for m in track.machines]
        if isinstance(track, News2Track):
            self._saved.append((track, track.log.copy(), None))

        def quiet(state: Any, sample: Sample, prev_t: int | None) -> Any:
            return track.step(state, sample, prev_t, [])

        return quiet

    def end(self) -> None:
        for owner, log, conflicts in self._saved:
            owner.log = log
            if conflicts is not None:
                owner.conflicts = conflicts
        self._saved = []


def routes(rules: PatientRules, metric: str) -> list[str]:
    """The series of a patient a reading of `metric` goes to."""
    found = [metric] if rules.watches(metric) else []
    if rules.news2 is not None and metric in NEWS2_PARAMETERS:
        found.append(NEWS2)
    if rules.rhythm is not None and metric == RR_METRIC:
        found.append(RHYTHM)
    return found


def track_for(rules: PatientRules, kind: str) -> Track:
    if kind == NEWS2:
        assert rules.news2 is not None
        return News2Track(rules.news2)
    if kind == RHYTHM:
        assert rules.rhythm is not None
        return RhythmTrack(rules.rhythm)
    return MetricTrack(
        rules.for_metric(kind), rules.flat_line(kind), rules.jump(kind), rules.baseline(kind)
    )


@dataclass(slots=True)
class PatientState:
    """All a patient's state in a partition: what a checkpoint record holds."""

    series: dict[str, Series]  # by kind: a metric, NEWS2 or rhythm
    devices: dict[str, tuple[int, int | None]]  # last arrival, open silence's start


@dataclass(slots=True)
class PartitionState:
    silence: DeviceSilence
    series: dict[tuple[str, str], Series] = field(default_factory=dict)


class Engine:
    """Feeds uploads to the detectors, per partition; returns the detections they emit."""

    def __init__(self, rules: Rules, *, every: int = EVERY) -> None:
        """`every`: readings between a window's checkpoints (1 is the reference the
        compact windows are proven against)."""
        self.rules = rules
        self.every = every
        self._partitions: dict[Hashable, PartitionState] = {}
        # Readings left out of the windows, and decisions late data contradicted, by kind.
        self.counts: Counter[str] = Counter()

    def feed(
        self,
        partition: Hashable,
        upload: Upload,
        *,
        now: int,
        scores: list[News2Score] | None = None,
    ) -> list[Detection]:
        """One upload, in the order it came from its partition. `now`: wall clock, ms.

        NEWS2 score changes are appended to `scores` when given (left out otherwise)."""
        state = self._partition(partition)
        detections: list[Detection] = []
        resolved = state.silence.arrived(upload.patient_id, upload.device_id, upload.received, now)
        if resolved is not None:
            detections.append(resolved)
        rules = self.rules.for_patient(upload.patient_id)
        by_series: defaultdict[str, list[Sample]] = defaultdict(list)
        routed: dict[str, list[list[Sample]]] = {}  # per metric: the series it goes to
        device_id = upload.device_id
        for reading in upload.readings:
            metric = reading.metric
            into = routed.get(metric)
            if into is None:
                into = routed[metric] = [by_series[kind] for kind in routes(rules, metric)]
            if not into:
                continue
            # One sample for every series it goes to: samples are never changed.
            sample = Sample(reading.t, device_id, reading.v, metric)
            for samples in into:
                samples.append(sample)
        learned = max(upload.received, now)
        for kind, samples in by_series.items():
            series = state.series.get((upload.patient_id, kind))
            if series is None:
                track = track_for(rules, kind)
                # Each series holds only what its own detectors look back over.
                horizon = track.span_ms + self.rules.lateness_ms
                series = Series(upload.patient_id, track, horizon, self.every)
                state.series[(upload.patient_id, kind)] = series
            series.last_arrival = max(series.last_arrival, upload.received)
            found, counts = series.add(samples)
            if kind == NEWS2:
                # NEWS2 shares its readings with the metrics' own series: its counts are
                # kept apart so that one retried reading is not counted twice.
                counts = Counter({f"news2_{reason}": n for reason, n in counts.items()})
                found = self._split_scores(upload.patient_id, series, found, now, scores)
            self.counts.update(counts)
            detections.extend(self._detection(upload.patient_id, f, learned, now) for f in found)
        return detections

    def check_silence(self, clocks: Mapping[Hashable, int], now: int) -> list[Detection]:
        """Device silence for each partition, judged at that partition's clock."""
        found: list[Detection] = []
        for partition, clock in clocks.items():
            state = self._partitions.get(partition)
            if state is not None:
                found.extend(state.silence.check(clock, now))
        return found

    def forget_idle(self, now: int) -> int:
        """Drop series with nothing pending that heard nothing for a horizon; how many."""
        dropped = 0
        for state in self._partitions.values():
            stale = [
                key
                for key, s in state.series.items()
                if now - s.last_arrival > self.rules.horizon_ms and s.idle
            ]
            for key in stale:
                del state.series[key]
            dropped += len(stale)
        return dropped

    def patients(self, partition: Hashable) -> dict[str, PatientState]:
        """The partition's state by patient (what a checkpoint writes)."""
        state = self._partitions.get(partition)
        if state is None:
            return {}
        devices = state.silence.by_patient()
        found = {p: PatientState({}, d) for p, d in devices.items()}
        for (patient_id, kind), series in state.series.items():
            found.setdefault(patient_id, PatientState({}, {})).series[kind] = series
        return found

    def restore(self, partition: Hashable, patients: Mapping[str, PatientState]) -> None:
        """Put back what `patients()` gave, before any upload of the partition is fed."""
        state = self._partition(partition)
        for patient_id, patient in patients.items():
            for kind, series in patient.series.items():
                state.series[(patient_id, kind)] = series
            state.silence.restore(patient_id, patient.devices)

    def drop_partition(self, partition: Hashable) -> None:
        self._partitions.pop(partition, None)

    def partitions(self) -> Iterable[Hashable]:
        return self._partitions.keys()

    def windows_held(self) -> int:
        return sum(len(state.series) for state in self._partitions.values())

    def readings_held(self) -> int:
        return sum(len(s.window) for p in self._partitions.values() for s in p.series.values())

    def _partition(self, partition: Hashable) -> PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = PartitionState(DeviceSilence(self.rules.silence_after_ms))
            self._partitions[partition] = state
        return state

    @staticmethod
    def _split_scores(
        patient_id: str,
        series: Series,
        found: list[Any],
        now: int,
        scores: list[News2Score] | None,
    ) -> list[Found]:
        """The NEWS2 track's episode changes; its score records go to `scores`."""
        assert isinstance(series.track, News2Track)
        series.track.log.prune(series.window.cutoff)  # no recompute reaches back further
        if scores is not None:
            scores.extend(score_record(patient_id, s, now) for s in found if isinstance(s, Scored))
        return [f for f in found if isinstance(f, Found)]

    def _detection(self, patient_id: str, found: Found, learned: int, now: int) -> Detection:
        change = found.change
        return Detection(
            alert_id=alert_id(patient_id, found.rule, change.start),
            patient_id=patient_id,
            rule=found.rule,
            state=change.state,
            severity=found.severity,
            episode_start=change.start,
            at=change.at,
            detected=now,
            retrospective=learned - change.at > self.rules.lateness_ms,
            metric=found.metric,
            value=change.value,
            device_id=change.device_id,
            detail=found.detail,
            suppressed=change.suppressed,
        )

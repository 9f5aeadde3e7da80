"""`vitals burden`: the detectors' alarm burden on a simulated population, and their speed.

A population (default 500 patients for 24 h) with normal variation, each patient's day
simulated and fed, faster than real time, through the processor's own code: the `Engine`
gets decoded uploads in arrival order as the runner would (one partition per patient:
patients share no state, so one after the other is the same as interleaved), and device
silence is checked at the runner's tick times between arrivals.

The population (normal variation, injected events): evaluation/population.py.

Injected events, one in a share of the patients, each with the rule that must catch it:
sustained desaturation (`spo2_low`), tachycardia (`hr_high`), NEWS2 deterioration
(`news2_medium`), AF (`rhythm_irregular`; SYNTHETIC beats from rhythm_validation's
Cohen 1983 model) and the device switched off (`device_silence`). Vital-sign events
ramp to their level over 30 s; their onset is when they reach it. An event is detected
when an episode of its rule opened for that patient between its start and its end (or
its deadline); on time when it opened by the deadline: onset + the rule's persistence +
one window (`_expectation`: the sampling interval for thresholds, respiration's 30 s for
NEWS2, one more window of 128 beats for rhythm, one silence check for device silence,
counted from the device's last upload). Every other opened episode is counted by rule
name, whatever rules the engine has, with those recorded but not paged (retrospective,
suppressed repeats) shown apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from vitals import progress

if TYPE_CHECKING:
    from tqdm import tqdm

from evaluation.population import (
    EVENT_KINDS,
    MINUTE,
    RAMP_MS,
    RAMPED,
    RESP_EVERY,
    T0,
    Day,
    Options,
    plan_day,
    readings,
    uploads,
)
from processors.engine import Engine
from processors.rhythm import RhythmRule, RhythmState, RhythmTrack
from processors.rules import Rules
from processors.windows import Sample
from vitals.contract import Detection, Reading, iso

TARGET_PER_PATIENT_DAY = 0.1

# Event kind -> the rule that must catch it.
EXPECTED_RULE = {
    "desaturation": "spo2_low",
    "tachycardia": "hr_high",
    "news2": "news2_medium",
    "af": "rhythm_irregular",
    "silence": "device_silence",
}
assert tuple(EXPECTED_RULE) == EVENT_KINDS


@dataclass(slots=True)
class EventResult:
    patient: str
    kind: str
    rule: str
    start: int  # the event begins
    onset: int  # its condition is fully there: what latency is measured from
    end: int
    deadline: int | None  # None: the data never allow it (e.g. too few rhythm windows)
    opened_at: int | None = None  # event time of the matching episode's opening
    detected_at: int | None = None  # arrival (simulated wall clock) when it was decided

    @property
    def detected(self) -> bool:
        return self.opened_at is not None

    @property
    def on_time(self) -> bool:
        return (
            self.opened_at is not None
            and self.deadline is not None
            and self.opened_at <= self.deadline
        )

    @property
    def latency_s(self) -> float | None:
        return None if self.opened_at is None else (self.opened_at - self.onset) / 1000

    @property
    def allowance_s(self) -> float | None:
        return None if self.deadline is None else (self.deadline - self.onset) / 1000


@dataclass(slots=True)
class PatientResult:
    patient: str
    event: EventResult | None
    readings: int = 0
    uploads: int = 0
    # Opened episodes not matched to the injected event, by rule; of those, the ones
    # recorded but not paged: retrospective (late data) and suppressed repeats.
    alerts: Counter[str] = field(default_factory=Counter)
    retrospective: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)


# --- running it through the engine ---------------------------------------------------------


def simulate_patient(index: int, opts: Options, rules: Rules, engine: Engine) -> PatientResult:
    day = plan_day(index, opts)
    found = readings(day, opts)
    pid = day.patient.patient_id
    event = _expectation(day, found, opts, rules)
    result = PatientResult(pid, event, readings=len(found))
    detections: list[Detection] = []
    partition = ("burden", index)
    after, tick = rules.silence_after_ms, opts.tick_ms
    last: int | None = None
    for up in uploads(day, found, opts):
        if last is not None:
            detections += _silence_tick(engine, partition, last, up.received, after, tick)
        detections += engine.feed(partition, up, now=up.received)
        result.uploads += 1
        injected = day.event
        if event is not None and injected is not None and injected.kind == "silence":
            # Silence counts from the device's last upload before it went off.
            if up.readings[-1].t < injected.start:
                event.onset, event.deadline = up.received, up.received + after + tick
        last = max(up.received, last or 0)
    if last is not None:
        detections += _silence_tick(engine, partition, last, opts.end, after, tick)
    engine.drop_partition(partition)
    for d in detections:
        if d.state != "opened":
            continue
        if event is not None and event.opened_at is None and _matches(d, event, opts):
            event.opened_at, event.detected_at = d.at, d.detected
            continue
        result.alerts[d.rule] += 1
        if d.retrospective:
            result.retrospective[d.rule] += 1
        if d.suppressed:
            result.suppressed[d.rule] += 1
    return result


def _silence_tick(
    engine: Engine, partition: object, last: int, until: int, after: int, tick: int
) -> list[Detection]:
    """The runner's tick between two arrivals: the first tick that finds the device silent."""
    due = last + after
    at = due + (-(due - T0)) % tick  # the next tick on the runner's grid
    if at >= until:
        return []
    return engine.check_silence({partition: at}, at)


def _matches(d: Detection, event: EventResult, opts: Options) -> bool:
    if d.rule != event.rule:
        return False
    limit = max(event.end, event.deadline or event.end)
    return event.start <= d.at <= limit


def _expectation(day: Day, found: list[Reading], opts: Options, rules: Rules) -> EventResult | None:
    """The injected event with its deadline: the rule's persistence plus one window."""
    event = day.event
    if event is None:
        return None
    rule = EXPECTED_RULE[event.kind]
    patient_rules = rules.for_patient(day.patient.patient_id)
    deadline: int | None = None
    onset = event.start + (RAMP_MS if event.kind in RAMPED else 0)
    if event.kind in ("desaturation", "tachycardia"):
        threshold = next((r for r in patient_rules.thresholds if r.rule == rule), None)
        if threshold is not None:  # one window: the metric's sampling interval
            deadline = onset + threshold.for_ms + opts.every_ms
    elif event.kind == "news2":
        if patient_rules.news2 is not None:  # one window: respiration's interval
            deadline = onset + patient_rules.news2.for_ms + RESP_EVERY
    elif event.kind == "af":
        if patient_rules.rhythm is not None:
            deadline = _rhythm_deadline(day, found, patient_rules.rhythm)
    else:  # from the device's last upload before it went off: set while feeding
        deadline = onset + rules.silence_after_ms + opts.tick_ms
    pid = day.patient.patient_id
    return EventResult(pid, event.kind, rule, event.start, onset, event.end, deadline)


def _rhythm_deadline(day: Day, found: list[Reading], rule: RhythmRule) -> int | None:
    """When the event's AF beats complete `windows_needed` + 1 windows (the detector's own
    windowing): persistence counted in windows, plus one window."""
    event = day.event
    assert event is not None
    # AF beats come from the tachograms that start inside the event.
    first = min((t for t in day.tachograms if t >= event.start), default=event.end)
    track = RhythmTrack(rule)
    state = RhythmState()
    for r in found:
        if r.metric == "rr_interval" and first <= r.t < event.end:
            state = track.advance(state, Sample(r.t, "d", r.v, r.metric))
            if state.judged >= track.rule.windows_needed + 1:
                return r.t
    return None


def _chunk(indexes: list[int], opts: Options, rules: Rules) -> list[PatientResult]:
    engine = Engine(rules)
    return [simulate_patient(i, opts, rules, engine) for i in indexes]


def simulate(opts: Options, rules: Rules) -> list[PatientResult]:
    indexes = list(range(opts.patients))
    # Chunks of a few patients, many per worker, so that progress moves as they finish;
    # each chunk builds its engine once (cheap beside a patient's simulated day).
    size = max(1, min(10, opts.patients // (max(1, opts.jobs) * 8)))
    chunks = [indexes[j : j + size] for j in range(0, len(indexes), size)]
    results: list[PatientResult] = []
    with progress.bar("burden", opts.patients, "patients") as shown:
        if opts.jobs <= 1:
            parts: Iterable[list[PatientResult]] = (_chunk(c, opts, rules) for c in chunks)
            results = [r for part in parts for r in _shown(part, shown)]
        else:
            with ProcessPoolExecutor(max_workers=opts.jobs) as pool:
                n = len(chunks)
                parts = pool.map(_chunk, chunks, [opts] * n, [rules] * n)
                results = [r for part in parts for r in _shown(part, shown)]
    return sorted(results, key=lambda r: r.patient)


def _shown(part: list[PatientResult], shown: tqdm) -> list[PatientResult]:
    shown.update(len(part))
    return part


# --- figures ---------------------------------------------------------------------------------


def figures(results: list[PatientResult], opts: Options, wall_s: float) -> dict[str, object]:
    days = opts.hours / 24
    free = [r for r in results if r.event is None]
    with_event = [r for r in results if r.event is not None]
    free_alerts: Counter[str] = Counter()
    free_retro: Counter[str] = Counter()
    free_suppressed: Counter[str] = Counter()
    for r in free:
        free_alerts.update(r.alerts)
        free_retro.update(r.retrospective)
        free_suppressed.update(r.suppressed)
    other: Counter[str] = Counter()
    for r in with_event:
        other.update(r.alerts)
    patient_days = len(free) * days
    rate = sum(free_alerts.values()) / patient_days if patient_days else 0.0
    events = [r.event for r in with_event if r.event is not None]
    by_kind = {}
    for kind in EVENT_KINDS:
        mine = [e for e in events if e.kind == kind]
        latencies = [e.latency_s for e in mine if e.latency_s is not None]
        by_kind[kind] = {
            "rule": EXPECTED_RULE[kind],
            "events": len(mine),
            "detected": sum(e.detected for e in mine),
            "on_time": sum(e.on_time for e in mine),
            "latency_median_s": round(statistics.median(latencies), 1) if latencies else None,
            "latency_max_s": round(max(latencies), 1) if latencies else None,
            "allowance_max_s": max((round(e.allowance_s or 0, 1) for e in mine), default=None),
        }
    readings = sum(r.readings for r in results)
    return {
        "options": asdict(opts),
        "event_free": {
            "patients": len(free),
            "patient_days": round(patient_days, 2),
            "alerts": sum(free_alerts.values()),
            "alerts_per_patient_day": round(rate, 4),
            "by_rule": {
                rule: {
                    "alerts": n,
                    "per_patient_day": round(n / patient_days, 4),
                    "retrospective": free_retro[rule],
                    "suppressed": free_suppressed[rule],
                }
                for rule, n in sorted(free_alerts.items())
            },
        },
        "event_patients_other_alerts": dict(sorted(other.items())),
        "events_by_kind": by_kind,
        "events": [
            {
                "patient": e.patient,
                "kind": e.kind,
                "rule": e.rule,
                "onset": iso(e.onset),
                "duration_min": round((e.end - e.onset) / MINUTE, 1),
                "detected": e.detected,
                "on_time": e.on_time,
                "latency_s": e.latency_s,
                "allowance_s": e.allowance_s,
                "decided_after_s": None
                if e.detected_at is None
                else round((e.detected_at - e.onset) / 1000, 1),
            }
            for e in events
        ],
        "targets": {
            "alerts_per_event_free_patient_day_below": TARGET_PER_PATIENT_DAY,
            "alerts_met": rate < TARGET_PER_PATIENT_DAY,
            "events_met": all(e.on_time for e in events),
        },
        "readings": readings,
        "uploads": sum(r.uploads for r in results),
        "wall_s": round(wall_s, 1),
        "readings_per_s": round(readings / wall_s) if wall_s else None,
        "speedup_over_real_time": round(opts.patients * opts.hours * 3600 / wall_s)
        if wall_s
        else None,
    }


def markdown(f: dict[str, object]) -> str:
    opts, free = f["options"], f["event_free"]
    assert isinstance(opts, dict) and isinstance(free, dict)
    lines = [
        f"# Alarm burden: {opts['patients']} patients × {opts['hours']:g} h (seed {opts['seed']})",
        "",
        f"Event-free patients: {free['patients']}, {free['alerts']} alerts, "
        f"**{free['alerts_per_patient_day']} per patient per day** "
        f"(target < {TARGET_PER_PATIENT_DAY}).",
        "",
        "| rule (event-free patients) | alerts | per patient per day | of which retrospective "
        "| of which suppressed repeats |",
        "|---|---|---|---|---|",
    ]
    by_rule = free["by_rule"]
    assert isinstance(by_rule, dict)
    for rule, row in by_rule.items():
        lines.append(
            f"| `{rule}` | {row['alerts']} | {row['per_patient_day']} | "
            f"{row['retrospective']} | {row['suppressed']} |"
        )
    if not by_rule:
        lines.append("| (none) | 0 | 0 | 0 | 0 |")
    lines += [
        "",
        "| injected event | rule | events | detected | on time | median latency s | "
        "max latency s | max allowance s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_kind = f["events_by_kind"]
    assert isinstance(by_kind, dict)
    for kind, row in by_kind.items():
        lines.append(
            f"| {kind} | `{row['rule']}` | {row['events']} | {row['detected']} | "
            f"{row['on_time']} | {row['latency_median_s']} | {row['latency_max_s']} | "
            f"{row['allowance_max_s']} |"
        )
    other = f["event_patients_other_alerts"]
    lines += [
        "",
        f"Other alerts on patients with an event (by rule): {other or 'none'}.",
        "",
        f"{f['readings']:,} readings in {f['uploads']:,} uploads, {f['wall_s']} s wall "
        f"({f['readings_per_s']:,} readings/s, {f['speedup_over_real_time']:,}× real time "
        f"summed over patients, {opts['jobs']} job(s)).",
        "",
    ]
    return "\n".join(lines)


def run(rules: Rules, opts: Options, out: Path) -> int:
    print(
        f"simulating {opts.patients} patients x {opts.hours:g} h in {opts.jobs} job(s) "
        f"(rules: {rules.source})",
        flush=True,
    )
    started = time.perf_counter()
    results = simulate(opts, rules)
    f = figures(results, opts, time.perf_counter() - started)
    events = f["events"]
    assert isinstance(events, list)
    print(f"{'patient':8} {'event':12} {'rule':17} {'detected':>8} {'latency s':>9} {'allow s':>8}")
    for e in events:
        latency = "-" if e["latency_s"] is None else f"{e['latency_s']:.0f}"
        allow = "-" if e["allowance_s"] is None else f"{e['allowance_s']:.0f}"
        verdict = "on time" if e["on_time"] else ("late" if e["detected"] else "MISSED")
        print(
            f"{e['patient']:8} {e['kind']:12} {e['rule']:17} {verdict:>8} {latency:>9} {allow:>8}"
        )
    text = markdown(f)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(f, option=orjson.OPT_INDENT_2))
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(f"written to {out} and {out.with_suffix('.md')}")
    targets = f["targets"]
    assert isinstance(targets, dict)
    return 0 if targets["alerts_met"] and targets["events_met"] else 1


def options_from(args: argparse.Namespace) -> Options:
    """The options, checked: a clear error for values that cannot work."""
    given = {
        "patients": args.patients,
        "hours": args.hours,
        "seed": args.seed,
        "event_share": args.event_share,
        "every_s": args.every,
        "upload_every_s": args.upload_every,
        "tachogram_s": args.tachogram,
    }
    opts = Options(
        **{name: value for name, value in given.items() if value is not None},
        jobs=args.jobs or os.cpu_count() or 1,
    )
    if opts.patients < 1:
        raise ValueError("--patients must be at least 1")
    if opts.hours < 3:
        raise ValueError("--hours must be at least 3 (events need room to start and end)")
    if not 0 <= opts.event_share <= 1:
        raise ValueError("--event-share must be between 0 and 1")
    if opts.every_s <= 0 or opts.upload_every_s <= 0 or opts.tachogram_s <= 0:
        raise ValueError("--every, --upload-every and --tachogram must be positive")
    return opts

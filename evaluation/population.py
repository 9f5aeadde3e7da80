"""The simulated population of `vitals burden`: each patient's day, its readings and uploads.

Normal variation (per patient, seeded; base traits and the daily rhythm from
evaluation/physiology.py): heart rate and SpO2 every `every_s` with noise, lower in sleep
(22:30-06:30 local, jittered), raised by activity bouts (a few a day, 5-60 min);
SpO2 94-99 % with motion-artefact dips of 5-15 s; respiration every 30 s; temperature
every 10 min; blood pressure three times a day; `rr_interval` tachograms of
`tachogram_s` every 30-60 min while still (sinus rhythm with respiratory arrhythmia and
occasional ectopic beats); the gateway uploads every `upload_every_s` and a poor rural
network holds uploads back for 1-10 min a few times a day (then the backlog arrives).

Injected events, one in a share of the patients: sustained desaturation, tachycardia,
NEWS2 deterioration, AF (SYNTHETIC beats from rhythm_validation's Cohen 1983 model) and
the device switched off. Vital-sign events ramp to their level over 30 s; their onset is
when they reach it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from evaluation.physiology import Patient, daily_rhythm
from evaluation.rhythm_validation import synthetic_af
from vitals.contract import Reading, Upload

HOUR = 3_600_000
MINUTE = 60_000
# Local midnight (UTC+8, where the simulated patients live) of a fixed day.
T0 = int(datetime(2026, 11, 22, 16, tzinfo=UTC).timestamp() * 1000)
RESP_EVERY = 30_000
RAMP_MS = 30_000  # an event's values are reached over this; its onset is the end of it
TEMP_EVERY = 10 * MINUTE
BP_HOURS = (8.0, 13.0, 19.0)  # local times of the cuff readings
EVENT_KINDS = ("desaturation", "tachycardia", "news2", "af", "silence")
RAMPED = ("desaturation", "tachycardia", "news2")  # values that ramp to their event level
DURATION_MIN = {  # how long each kind of event lasts, minutes
    "desaturation": (10, 30),
    "tachycardia": (15, 40),
    "news2": (120, 360),
    "af": (120, 480),
    "silence": (30, 90),
}


@dataclass(frozen=True, slots=True)
class Options:
    patients: int = 500
    hours: float = 24.0
    seed: int = 2026
    event_share: float = 0.3  # share of patients with one injected event
    every_s: float = 5.0  # heart rate and SpO2
    upload_every_s: float = 60.0
    tachogram_s: float = 300.0
    tick_s: float = 5.0  # the runner's silence check (VITALS_SILENCE_CHECK_INTERVAL_S)
    jobs: int = 1

    @property
    def every_ms(self) -> int:
        return round(self.every_s * 1000)

    @property
    def upload_ms(self) -> int:
        return round(self.upload_every_s * 1000)

    @property
    def tick_ms(self) -> int:
        return round(self.tick_s * 1000)

    @property
    def end(self) -> int:
        return T0 + round(self.hours * HOUR)


@dataclass(frozen=True, slots=True)
class Injected:
    kind: str
    start: int
    end: int


@dataclass(slots=True)
class Day:
    """One patient's simulated day: what happens when, before any reading is drawn."""

    patient: Patient
    sleep: list[tuple[int, int]]
    bouts: list[tuple[int, int, float]]  # activity: start, end, intensity 0-1
    tachograms: list[int]  # start times
    outages: list[tuple[int, int]]  # the network holds uploads back
    event: Injected | None
    systolic: float


# --- the population -----------------------------------------------------------------------


def plan_day(index: int, opts: Options) -> Day:
    patient = Patient(index, opts.seed)
    rng = random.Random(f"{opts.seed}-day-{index}")
    end = opts.end
    sleep = []
    for night in range(-1, math.ceil(opts.hours / 24) + 1):
        bed = T0 + night * 24 * HOUR + round((22.5 + rng.uniform(-1, 1)) * HOUR)
        sleep.append((bed, bed + round(rng.uniform(7, 8.5) * HOUR)))
    bouts = []
    t = T0
    while True:
        t += round(rng.expovariate(5 / (16 * HOUR)))  # ~5 bouts per waking day
        if t >= end:
            break
        if not _within(sleep, t):
            length = round(rng.uniform(5, 60) * MINUTE)
            bouts.append((t, t + length, rng.uniform(0.3, 1.0)))
            t += length
    tachograms = []
    t = T0 + round(rng.uniform(0, 30) * MINUTE)
    while t < end:
        if not _within_bout(bouts, t):  # a watch records its tachogram while still
            tachograms.append(t)
        t += round(rng.uniform(30, 60) * MINUTE)
    outages = []
    t = T0
    while True:
        t += round(rng.expovariate(4 / (24 * HOUR)))  # ~4 a day
        if t >= end:
            break
        outages.append((t, t + round(rng.uniform(1, 10) * MINUTE)))
    event = None
    if rng.random() < opts.event_share:
        kind = rng.choice(EVENT_KINDS)
        low, high = DURATION_MIN[kind]
        length = round(rng.uniform(low, high) * MINUTE)
        latest = max(T0 + HOUR, end - length - 15 * MINUTE)  # leave room to resolve
        start = round(rng.uniform(T0 + HOUR, latest)) // 1000 * 1000
        event = Injected(kind, start, min(start + length, end))
    return Day(patient, sleep, bouts, tachograms, outages, event, rng.uniform(115, 145))


def _within(spans: Sequence[tuple[int, int]], t: int) -> bool:
    return any(a <= t < b for a, b in spans)


def _within_bout(bouts: Sequence[tuple[int, int, float]], t: int) -> bool:
    return any(a <= t < b for a, b, _ in bouts)


def _intensity(bouts: Sequence[tuple[int, int, float]], t: int) -> float:
    for a, b, level in bouts:
        if a <= t < b:
            ramp = min(t - a, b - t) / (3 * MINUTE)  # up and down over 3 minutes
            return level * min(1.0, ramp)
    return 0.0


def readings(day: Day, opts: Options) -> list[Reading]:
    """Every reading of the day in event-time order (none while the device is off)."""
    p, rng, event = day.patient, day.patient.rng, day.event
    out: list[Reading] = []
    artefact_left = 0
    artefact_drop = 0.0
    every = opts.every_ms
    for t in range(T0, opts.end, every):
        active = event.kind if event is not None and event.start <= t < event.end else None
        if active == "silence":
            continue
        rhythm = daily_rhythm(t)
        asleep = _within(day.sleep, t)
        level = 0.0 if asleep else _intensity(day.bouts, t)
        hr = p.resting_hr + 6 * rhythm - 6 * asleep + level * 35 + rng.gauss(0, 2.5)
        spo2 = p.spo2_base - 0.8 * asleep - 0.5 * level + rng.gauss(0, 0.6)
        resp = 15 + 1.5 * rhythm - 1.5 * asleep + 6 * level + rng.gauss(0, 1)
        temp = 36.7 + 0.3 * rhythm + rng.gauss(0, 0.15)
        if active is not None and event is not None:
            # The event's values, reached over RAMP_MS from the patient's own (physiology
            # moves in tens of seconds; a step would look like a sensor fault).
            w = min(1.0, (t - event.start) / RAMP_MS)
            if active == "desaturation":
                spo2 += w * (min(89.0, 84 + rng.gauss(0, 1.5)) - spo2)
            elif active == "tachycardia":
                hr += w * (145 + rng.gauss(0, 4) - hr)
            elif active == "news2":  # sepsis-like: RR 2, HR 2, temperature 1, SpO2 1-2 points
                hr += w * (120 + rng.gauss(0, 3) - hr)
                resp += w * (23 + rng.gauss(0, 0.8) - resp)
                temp += w * (38.5 + rng.gauss(0, 0.2) - temp)
                spo2 += w * (94 + rng.gauss(0, 0.6) - spo2)
            elif active == "af":  # fast irregular ventricular response
                hr += w * (115 + rng.gauss(0, 10) - hr)
        # Motion artefact: the probe slips and reads low for a few samples.
        if artefact_left == 0 and rng.random() < (0.002 + 0.01 * level):
            artefact_left, artefact_drop = rng.randint(1, 3), rng.uniform(5, 15)
        if artefact_left:
            spo2 -= artefact_drop
            artefact_left -= 1
        out.append(Reading("heart_rate", t, float(round(hr)), "/min"))
        out.append(Reading("spo2", t, float(min(100, round(spo2))), "%"))
        offset = t - T0
        if offset % RESP_EVERY < every:
            out.append(Reading("resp_rate", t, float(round(resp)), "/min"))
        if offset % TEMP_EVERY < every:
            out.append(Reading("body_temp", t, round(temp, 1), "Cel"))
        hour = offset / HOUR % 24
        if any(0 <= hour - h < every / HOUR for h in BP_HOURS) and not asleep:
            systolic = day.systolic + rng.gauss(0, 8)
            out.append(Reading("systolic_bp", t, float(round(systolic)), "mm[Hg]"))
            out.append(Reading("diastolic_bp", t, float(round(systolic * 0.62)), "mm[Hg]"))
    off = (event.start, event.end) if event is not None and event.kind == "silence" else (0, 0)
    for number, start in enumerate(day.tachograms):
        af = event is not None and event.kind == "af" and event.start <= start < event.end
        beats = _af_beats(day, number, opts) if af else _sinus_beats(day, start, opts)
        t = start
        for rr in beats:
            t += round(rr)
            if t >= opts.end or off[0] <= t < off[1]:  # the device is off: no beats either
                break
            out.append(Reading("rr_interval", t, round(rr, 1), "ms"))
    out.sort(key=lambda r: r.t)
    return out


def _sinus_beats(day: Day, start: int, opts: Options) -> list[float]:
    """Sinus rhythm at rest: respiratory arrhythmia, noise, now and then an ectopic beat."""
    rng = day.patient.rng
    asleep = _within(day.sleep, start)
    hr = day.patient.resting_hr + 6 * daily_rhythm(start) - 6 * asleep
    mean = 60_000 / hr
    beats: list[float] = []
    elapsed = 0.0
    while elapsed < opts.tachogram_s * 1000:
        rr = mean * (1 + 0.04 * math.sin(elapsed / 4000 * 2 * math.pi) + rng.gauss(0, 0.015))
        if rng.random() < 0.005:  # a premature beat and its compensatory pause
            beats += [rr * 0.65, rr * 1.35]
            elapsed += 2 * rr
            continue
        beats.append(rr)
        elapsed += rr
    return beats


def _af_beats(day: Day, number: int, opts: Options) -> list[float]:
    """AF: rhythm_validation's synthetic model (Cohen 1983), a series per tachogram."""
    series = synthetic_af(opts.seed * 100_003 + day.patient.index * 101 + number, 1200)
    beats: list[float] = []
    elapsed = 0.0
    for rr in series:
        if elapsed >= opts.tachogram_s * 1000:
            break
        beats.append(rr)
        elapsed += rr
    return beats


def uploads(day: Day, found: list[Reading], opts: Options) -> Iterator[Upload]:
    """The gateway's uploads in arrival order: one per interval, held back by outages."""
    p = day.patient
    bucket: list[Reading] = []
    bucket_end = T0 + opts.upload_ms
    number = 0

    def upload(readings: list[Reading], ready: int) -> Upload:
        nonlocal number
        number += 1
        arrival = ready + 2_000  # the phone's send and the gateway's answer
        for start, stop in day.outages:
            if start <= arrival < stop:
                arrival = stop + 2_000
        return Upload(
            f"u{number}", "gw-burden", p.device_id, p.patient_id, arrival, tuple(readings)
        )

    for reading in found:
        while reading.t >= bucket_end:
            if bucket:
                yield upload(bucket, bucket_end)
                bucket = []
            bucket_end += opts.upload_ms
        bucket.append(reading)
    if bucket:
        yield upload(bucket, bucket_end)

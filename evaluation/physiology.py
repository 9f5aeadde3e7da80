"""Simulated patients: a seeded, pure model of what their devices measure.

Each patient wears a watch (heart rate, SpO2 every few seconds, respiration every 30 s),
has a thermometer reading every 10 min and a blood-pressure cuff every 4 h. Values follow
a daily rhythm plus noise; injected events (desaturation, tachycardia, a device going
silent) are scheduled in event time. The simulated fleet of `make run`
(vitalsctl/simulate.py) posts these readings; the alarm-burden population
(evaluation/population.py) feeds them to the engine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

EVENT_KINDS = ("desaturation", "tachycardia", "silence")


@dataclass(frozen=True, slots=True)
class Event:
    """An injected clinical or device event for one patient, in ms since the epoch."""

    kind: str
    patient: int
    start: int
    end: int


@dataclass
class Patient:
    index: int
    seed: int
    resting_hr: float = 0.0
    spo2_base: float = 0.0
    glitch_rate: float = 0.0  # share of samples with an impossible value (sensor glitch)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed * 1_000_003 + self.index)
        self.resting_hr = self.resting_hr or self.rng.uniform(58, 80)
        self.spo2_base = self.spo2_base or self.rng.uniform(96.5, 98.5)

    @property
    def patient_id(self) -> str:
        return f"p-{self.index:05d}"

    @property
    def device_id(self) -> str:
        return f"watch-{self.index:05d}"

    def readings(self, start: int, end: int, every_ms: int, events: list[Event]) -> list[dict]:
        """Readings with event times in [start, end), as the gateway's wire format."""
        out: list[dict] = []
        mine = [e for e in events if e.patient == self.index]
        t = start - start % every_ms + every_ms if start % every_ms else start
        while t < end:
            active = {e.kind for e in mine if e.start <= t < e.end}
            if "silence" not in active:
                out.extend(self._sample(t, every_ms, active))
            t += every_ms
        return out

    def _sample(self, t: int, every_ms: int, active: set[str]) -> list[dict]:
        circadian = daily_rhythm(t)
        hr = self.resting_hr + 6 * circadian + self.rng.gauss(0, 2.5)
        spo2 = min(100.0, self.spo2_base + self.rng.gauss(0, 0.6))
        if "tachycardia" in active:
            hr = 142 + self.rng.gauss(0, 3)
        if "desaturation" in active:
            spo2 = 85 + self.rng.gauss(0, 1)
        stamp = iso(t)
        out = [
            {"metric": "heart_rate", "t": stamp, "v": round(hr, 1), "unit": "/min"},
            {"metric": "spo2", "t": stamp, "v": round(min(spo2, 100.0), 1), "unit": "%"},
        ]
        if self.glitch_rate and self.rng.random() < self.glitch_rate:
            # A loose probe reads 0 %: the gateway rejects it item by item.
            out.append({"metric": "spo2", "t": stamp, "v": 0, "unit": "%"})
        if t % 30_000 < every_ms:
            rr = 15 + 2 * circadian + self.rng.gauss(0, 1)
            out.append({"metric": "resp_rate", "t": stamp, "v": round(rr, 1), "unit": "/min"})
        if t % 600_000 < every_ms:  # the thermometer reports in Fahrenheit: converted at the door
            temp_c = 36.7 + 0.3 * circadian + self.rng.gauss(0, 0.15)
            out.append(
                {
                    "metric": "body_temp",
                    "t": stamp,
                    "v": round(temp_c * 9 / 5 + 32, 1),
                    "unit": "[degF]",
                }
            )
        if t % 14_400_000 < every_ms:
            out.append(
                {
                    "metric": "systolic_bp",
                    "t": stamp,
                    "v": round(self.rng.gauss(124, 8)),
                    "unit": "mm[Hg]",
                }
            )
            out.append(
                {
                    "metric": "diastolic_bp",
                    "t": stamp,
                    "v": round(self.rng.gauss(79, 6)),
                    "unit": "mm[Hg]",
                }
            )
        return out


def daily_rhythm(t: int) -> float:
    """-1 to 1 over the patient's day (they live at UTC+8): higher by day, lowest at night.

    Shared with the alarm-burden population (evaluation/population.py)."""
    hour = datetime.fromtimestamp(t / 1000, UTC).hour + 8
    return math.sin((hour % 24 - 10) / 24 * 2 * math.pi)


def default_events(start: int, patients: int) -> list[Event]:
    """The demo's injected events: visible within a few minutes of `make run`."""
    events: list[Event] = []
    if patients >= 1:  # already under way when the simulator starts (found in the backlog)
        events.append(Event("desaturation", 0, start - 200_000, start + 40_000))
    if patients >= 2:
        events.append(Event("tachycardia", 1, start - 330_000, start + 60_000))
    if patients >= 3:
        events.append(Event("silence", 2, start, start + 100_000))  # from its backlog on
    if patients >= 4:
        events.append(Event("desaturation", 3, start + 30_000, start + 200_000))
    return events


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")

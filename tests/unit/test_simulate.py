"""The simulator's generator: plausible values, injected events where scheduled."""

from datetime import datetime

from evaluation.physiology import Event, Patient, default_events
from vitals.catalog import METRICS

T0 = 1_795_000_000_000  # a fixed instant, ms


def _values(readings: list[dict], metric: str) -> list[float]:
    return [r["v"] for r in readings if r["metric"] == metric]


def test_normal_readings_are_plausible_and_have_offsets() -> None:
    readings = Patient(0, seed=1).readings(T0, T0 + 6 * 3_600_000, 5_000, [])
    assert {r["metric"] for r in readings} >= {
        "heart_rate",
        "spo2",
        "resp_rate",
        "body_temp",
        "systolic_bp",
        "diastolic_bp",
    }
    for r in readings:
        metric = METRICS[r["metric"]]
        value = metric.to_canonical(r["v"], r["unit"])
        assert value is not None and metric.low <= value <= metric.high, r
        assert datetime.fromisoformat(r["t"]).utcoffset() is not None
    spo2 = _values(readings, "spo2")
    assert min(spo2) > 93 and max(spo2) <= 100


def test_desaturation_and_tachycardia_only_inside_their_event() -> None:
    events = [
        Event("desaturation", 0, T0 + 60_000, T0 + 240_000),
        Event("tachycardia", 0, T0 + 300_000, T0 + 700_000),
    ]
    patient = Patient(0, seed=1)
    before = patient.readings(T0, T0 + 60_000, 5_000, events)
    during = patient.readings(T0 + 60_000, T0 + 240_000, 5_000, events)
    tachy = patient.readings(T0 + 300_000, T0 + 700_000, 5_000, events)
    assert min(_values(before, "spo2")) > 93
    assert max(_values(during, "spo2")) < 90
    assert min(_values(tachy, "heart_rate")) > 130


def test_silence_produces_no_readings_and_other_patients_unaffected() -> None:
    events = [Event("silence", 0, T0, T0 + 120_000)]
    assert Patient(0, seed=1).readings(T0, T0 + 120_000, 5_000, events) == []
    assert len(Patient(1, seed=1).readings(T0, T0 + 120_000, 5_000, events)) >= 48


def test_same_seed_same_series() -> None:
    a = Patient(3, seed=9).readings(T0, T0 + 600_000, 5_000, [])
    b = Patient(3, seed=9).readings(T0, T0 + 600_000, 5_000, [])
    assert a == b


def test_default_events_scale_with_fleet_size() -> None:
    assert default_events(T0, 0) == []
    kinds = {e.kind for e in default_events(T0, 50)}
    assert kinds == {"desaturation", "tachycardia", "silence"}


def test_glitches_are_impossible_values_the_catalog_rejects() -> None:
    readings = Patient(0, seed=1, glitch_rate=0.05).readings(T0, T0 + 3_600_000, 5_000, [])
    metric = METRICS["spo2"]
    glitches = [r for r in readings if r["metric"] == "spo2" and not metric.low <= r["v"]]
    assert 10 <= len(glitches) <= 70  # ~5 % of 720 samples
    clean = Patient(0, seed=1).readings(T0, T0 + 3_600_000, 5_000, [])
    assert all(r["v"] != 0 for r in clean)  # no glitches unless asked for


def test_values_follow_a_daily_rhythm_higher_by_day_than_at_night() -> None:
    """The patients live at UTC+8: their afternoon is 06-10 UTC, their small hours 18-22."""
    day0 = T0 - T0 % 86_400_000  # midnight UTC
    readings = Patient(0, seed=1).readings(day0, day0 + 86_400_000, 60_000, [])

    def mean(metric: str, utc_hours: range) -> float:
        values = [
            r["v"]
            for r in readings
            if r["metric"] == metric and datetime.fromisoformat(r["t"]).hour in utc_hours
        ]
        return sum(values) / len(values)

    afternoon, night = range(6, 10), range(18, 22)
    assert mean("heart_rate", afternoon) - mean("heart_rate", night) > 8  # 6 × (1 − −1) ≈ 12
    assert mean("resp_rate", afternoon) - mean("resp_rate", night) > 2.5  # ≈ 4

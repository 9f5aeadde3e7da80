"""`vitals burden` on a small population: what it counts is what the engine decided.

Each patient's day is fed again, independently, to a fresh engine; the test's own plain
reading of those detections must match the command's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from evaluation import burden, population
from processors.engine import Engine
from processors.rules import DEFAULT_RULES_FILE, Rules, parse_rules
from vitals.contract import Detection
from vitalsctl import evaluate
from vitalsctl.cli import main

SMALL = population.Options(patients=20, hours=6, seed=11, event_share=0.5, jobs=1)


def rules(**overrides: dict[str, object]) -> Rules:
    doc = tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    for name, fields in overrides.items():
        doc["defaults"][name] = {**doc["defaults"].get(name, {}), **fields}
    return parse_rules(doc, source="test")


def replayed(index: int, opts: population.Options, r: Rules) -> list[Detection]:
    """Every detection of one patient's day, from a fresh engine fed its uploads."""
    day = population.plan_day(index, opts)
    engine = Engine(r)
    found: list[Detection] = []
    last = None

    def tick(until: int) -> None:
        # The runner's tick: the first one at or after the silence is due.
        assert last is not None
        due = last + r.silence_after_ms
        at = due + (-(due - population.T0)) % opts.tick_ms
        if at < until:
            found.extend(engine.check_silence({"p": at}, at))

    for up in population.uploads(day, population.readings(day, opts), opts):
        if last is not None:
            tick(up.received)
        found += engine.feed("p", up, now=up.received)
        last = up.received
    tick(opts.end)
    return found


@pytest.fixture(scope="module")
def small() -> list[burden.PatientResult]:
    return burden.simulate(SMALL, rules())


def test_events_count_only_an_opening_of_their_rule_in_their_span_and_the_rest_is_counted(
    small: list[burden.PatientResult],
) -> None:
    r, results = rules(), small
    assert len(results) == SMALL.patients
    with_event = [p for p in results if p.event is not None]
    assert with_event and len(with_event) < SMALL.patients  # both kinds of patient
    for index, result in enumerate(results):
        opened = [d for d in replayed(index, SMALL, r) if d.state == "opened"]
        event = result.event
        matching = []
        if event is not None:
            span_end = max(event.end, event.deadline or event.end)
            matching = [
                d for d in opened if d.rule == event.rule and event.start <= d.at <= span_end
            ]
            if matching:
                assert event.opened_at == matching[0].at
                assert event.latency_s == (matching[0].at - event.onset) / 1000
            else:
                assert not event.detected and not event.on_time
        others = [d for d in opened if d not in matching[:1]]
        assert result.alerts == Counter(d.rule for d in others), result.patient
        assert result.suppressed == Counter(d.rule for d in others if d.suppressed)
        assert result.retrospective == Counter(d.rule for d in others if d.retrospective)


def test_the_figures_say_what_was_counted(small: list[burden.PatientResult]) -> None:
    doc = burden.figures(small, SMALL, wall_s=1.0)
    free, events = doc["event_free"], doc["events"]
    assert isinstance(free, dict) and isinstance(events, list)
    assert free["patients"] + len(events) == SMALL.patients
    alerts = sum(sum(p.alerts.values()) for p in small if p.event is None)
    assert free["alerts"] == alerts == sum(row["alerts"] for row in free["by_rule"].values())
    assert free["alerts_per_patient_day"] == round(alerts / (free["patients"] * 6 / 24), 4)
    on_time = [e for e in events if e["on_time"]]
    assert all(e["latency_s"] <= e["allowance_s"] for e in on_time)
    assert doc["targets"]["events_met"] == (len(on_time) == len(events))  # type: ignore[index]
    assert "per patient per day" in burden.markdown(doc)


def test_the_command_writes_both_files_and_exits_by_the_targets(tmp_path: Path) -> None:
    out = tmp_path / "burden.json"
    opts = population.Options(patients=3, hours=3, seed=1, event_share=0.0, jobs=1)
    code = burden.run(rules(), opts, out)
    doc = orjson.loads(out.read_bytes())
    met = doc["targets"]["alerts_met"] and doc["targets"]["events_met"]
    assert code == (0 if met else 1)
    assert out.with_suffix(".md").read_text().startswith("# Alarm burden: 3 patients")


def test_a_disabled_rule_misses_its_events_and_the_command_fails(tmp_path: Path) -> None:
    opts = population.Options(patients=6, hours=4, seed=3, event_share=1.0, jobs=1)
    r = rules(spo2_low={"enabled": False}, hr_high={"enabled": False})
    code = burden.run(r, opts, tmp_path / "b.json")
    doc = orjson.loads((tmp_path / "b.json").read_bytes())
    missed = [e for e in doc["events"] if e["kind"] in ("desaturation", "tachycardia")]
    assert missed, "the seed must give such events"
    assert all(not e["detected"] and e["latency_s"] is None for e in missed)
    assert code == 1


def test_every_rule_the_engine_has_is_counted_by_name(tmp_path: Path) -> None:
    # A rule the command never heard of, that a normal day trips: heart rate below 65.
    hr_low = {
        "kind": "threshold",
        "metric": "heart_rate",
        "direction": "below",
        "threshold": 65.0,
        "clear": 70.0,
        "for_s": 60.0,
        "clear_for_s": 60.0,
        "severity": "low",
    }
    opts = population.Options(patients=3, hours=3, seed=5, event_share=0.0, jobs=1)
    code = burden.run(rules(hr_low=hr_low), opts, tmp_path / "b.json")
    free = orjson.loads((tmp_path / "b.json").read_bytes())["event_free"]
    assert free["by_rule"]["hr_low"]["alerts"] > 0
    assert free["alerts_per_patient_day"] > burden.TARGET_PER_PATIENT_DAY
    assert code == 1


def test_two_jobs_give_the_same_figures_as_one() -> None:
    opts = population.Options(patients=4, hours=3, seed=2, event_share=0.5, jobs=1)
    one = burden.simulate(opts, rules())
    two = burden.simulate(dataclasses.replace(opts, jobs=2), rules())
    key = [(p.patient, p.alerts, p.event and p.event.opened_at) for p in one]
    assert key == [(p.patient, p.alerts, p.event and p.event.opened_at) for p in two]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patients", "0"], "--patients must be at least 1"),
        (["--hours", "2"], "--hours must be at least 3"),
        (["--event-share", "1.5"], "--event-share must be between 0 and 1"),
        (["--every", "0"], "must be positive"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    evaluate.add_burden_arguments(parser)
    with pytest.raises(ValueError, match=message):
        burden.options_from(parser.parse_args(argv))
    assert main(["burden", *argv]) == 2
    assert message in capsys.readouterr().err

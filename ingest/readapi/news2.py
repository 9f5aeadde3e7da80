"""The current NEWS2 of a patient, computed on request from the latest stored readings.

NEWS2 scores are not stored: the processor computes them in memory as readings stream in.
The read API scores the latest reading of each parameter at or before `at` with the same
pure function (processors/news2.score) and the patient's own rules (cohort, scale,
staleness, minimum parameters), so the answer matches what the processor would score from
the same readings. Fewer fresh parameters than the rules' minimum: no score (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.errors import NotFound
from processors import news2
from processors.rules import Rules
from sinks.pgtime import to_ms


@dataclass(frozen=True, slots=True)
class Latest:
    metric: str
    t: datetime
    value: float


def current(rules: Rules, patient_id: str, at: datetime, latest: list[Latest]) -> dict[str, Any]:
    """The score document, or NotFound("news2_not_available") saying why there is none."""
    rule = rules.for_patient(patient_id).news2
    if rule is None:
        raise NotFound("news2_not_available", "NEWS2 is not enabled for this patient's rules")
    at_ms = to_ms(at)
    # A coded parameter with an invalid code counts as missing (the processor skips it too).
    by_metric = {r.metric: r for r in latest if news2.valid(r.metric, r.value)}
    entries = tuple(
        (to_ms(by_metric[p].t), by_metric[p].value) if p in by_metric else None
        for p in news2.PARAMETERS
    )
    score = news2.score(entries, at_ms, rule.spo2_scale, rule.staleness_ms)
    if len(score.points) < rule.min_parameters:
        raise NotFound(
            "news2_not_available",
            f"{len(score.points)} of {len(news2.PARAMETERS)} parameters have a reading in the"
            f" {rule.staleness_ms // 1000} s before `at`; the rules need {rule.min_parameters}",
        )
    return {
        "at": at,
        "news2": score.total,
        "band": score.band,
        "red": score.red,
        "partial": score.partial,
        "spo2_scale": score.scale,
        "parameters": {
            p: {
                "points": score.points[p],
                "value": by_metric[p].value,
                "t": by_metric[p].t,
                "age_s": score.ages_ms[p] // 1000,
            }
            for p in news2.PARAMETERS
            if p in score.points
        },
        "missing": [p for p in news2.PARAMETERS if p not in score.points],
    }

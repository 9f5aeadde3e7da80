"""A patient's NEWS2 as the processor computed it: the stored score records, shaped.

The processor scores NEWS2 as readings stream in and publishes each change of the score
(vitals.news2, docs/scores.md); the timescale sink stores them in news2_scores. The score
at a moment is the latest record at or before it. None stored: 404 news2_not_available.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from frontdoor.errors import NotFound
from vitals.contract import NEWS2_PARAMETERS as PARAMETERS

_MS = timedelta(milliseconds=1)


def current(at: datetime, row: Any | None) -> dict[str, Any]:
    """The score at `at` from the latest record at or before it (queries.NEWS2_LATEST)."""
    if row is None:
        raise NotFound(
            "news2_not_available",
            "no NEWS2 score was computed for this patient at or before `at` (the processor"
            " scores a patient whose rules enable NEWS2 once enough parameters are fresh)",
        )
    return {"at": at, **score(row)}


def score(row: Any) -> dict[str, Any]:
    """One stored score record as the API shows it."""
    t: datetime = row["t"]
    used = orjson.loads(row["parameters"])
    return {
        "t": t,
        "news2": row["news2"],
        "band": row["band"],
        "red": row["red"],
        "partial": row["partial"],
        "spo2_scale": row["spo2_scale"],
        "parameters": {
            p: {
                "points": used[p]["points"],
                "value": used[p]["value"],
                "t": t - used[p]["age_ms"] * _MS,
                "age_s": used[p]["age_ms"] // 1000,
            }
            for p in PARAMETERS
            if p in used
        },
        "missing": [p for p in PARAMETERS if p not in used],
        "computed_at": row["computed_at"],
    }

"""The read API's own Observations (readapi/fhir_observations.py) where the integration
tests do not reach: a partial NEWS2 score says what it was computed without."""

from __future__ import annotations

from readapi import fhir_observations


def test_a_partial_news2_score_notes_its_missing_parameters() -> None:
    score = fhir_observations.news2(
        patient_id="p-1", t_ms=1_772_352_000_000, computed_ms=1_772_352_001_000, score=3,
        band="low", red=False, spo2_scale=2, missing=["body_temp", "consciousness"],
    )  # fmt: skip
    assert [n["text"] for n in score["note"]] == [
        "clinical risk: low",
        "partial: computed without body_temp, consciousness",
    ]
    assert "SpO2 scale 2" in score["method"]["text"]
    assert score["issued"] == "2026-03-01T08:00:01.000Z"

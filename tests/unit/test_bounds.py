"""The kernel's accepted range of times and identifier grammar (vitals/bounds.py), and
repeated JSON keys (ingest/jsonkeys.py), at every door that decodes a body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from ingest.validation import validate_upload
from vitals import bounds

NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # a shift to UTC would fall before year 1
        "9999-12-31T23:59:59-14:00",  # ...or after 9999
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00Z",
    ],
)
def test_times_outside_the_range_are_refused_without_overflow(text: str) -> None:
    assert "1970-01-01" in (bounds.time_problem(datetime.fromisoformat(text)) or "")


@pytest.mark.parametrize("text", ["1970-01-01T00:00:00Z", "2199-12-31T23:59:59.999+00:00"])
def test_the_ends_of_the_range_are_in_it(text: str) -> None:
    moment = datetime.fromisoformat(text)
    assert bounds.time_problem(moment) is None
    assert bounds.ms_problem(bounds.epoch_ms(moment)) is None


def test_milliseconds_and_datetimes_agree_on_the_range() -> None:
    assert bounds.ms_problem(bounds.EARLIEST_MS - 1) is not None
    assert bounds.ms_problem(bounds.LATEST_MS) is not None
    assert bounds.epoch_ms(bounds.LATEST) == bounds.LATEST_MS
    assert bounds.time_problem(datetime(2026, 1, 1)) is not None  # no offset


@pytest.mark.parametrize("value", ["p/1", "/", ".", "..", "a/../b"])
def test_an_identifier_must_be_one_url_path_segment(value: str) -> None:
    assert bounds.identifier_problem(value) is not None


@pytest.mark.parametrize("value", ["a.b", "...", "p%2F1", "p?x", "p#1"])
def test_other_punctuation_survives_percent_encoding_and_is_data(value: str) -> None:
    assert bounds.identifier_problem(value) is None


def test_a_reading_before_1970_is_rejected_item_by_item() -> None:
    body = orjson.dumps(
        {
            "device_id": "d",
            "patient_id": "p",
            "readings": [
                {"metric": "heart_rate", "t": "0001-01-01T00:00:00Z", "v": 72, "unit": "/min"},
                {"metric": "heart_rate", "t": "2026-01-01T00:00:00Z", "v": 72, "unit": "/min"},
            ],
        }
    )
    batch = validate_upload(body, now_ms=NOW_MS, max_future_skew_s=300, max_readings=10)
    assert [(r.index, r.code) for r in batch.rejected] == [(0, "time_out_of_range")]
    assert len(batch.rows) == 1


def test_aware_offsets_compare_without_overflow() -> None:
    east = timezone(timedelta(hours=14))
    assert bounds.time_problem(datetime(1, 1, 1, tzinfo=east)) is not None
    assert bounds.time_problem(datetime(2026, 1, 1, tzinfo=UTC)) is None

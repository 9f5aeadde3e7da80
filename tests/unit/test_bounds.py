"""The kernel's accepted range of times and identifier grammar (vitals/bounds.py), and
repeated JSON keys (ingest/jsonkeys.py), at every door that decodes a body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontdoor.errors import Malformed
from ingest.fastitems import fast_upload
from ingest.jsonkeys import refuse_repeated_keys, strings_in
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


# --- repeated keys ---------------------------------------------------------------------------

GOOD = (
    b'{"device_id":"d","patient_id":"p","readings":[{"metric":"spo2",'
    b'"t":"2026-01-01T00:00:00Z","v":97.3,"unit":"%"}]}'
)


@pytest.mark.parametrize(
    "body",
    [
        GOOD.replace(b'"v":97.3', b'"v":97.3,"v":55.5'),  # the example
        GOOD.replace(b'"unit":"%"', b'"unit":"%","unit":"%"'),  # same value twice
        GOOD.replace(b'"device_id":"d"', b'"device_id":"d","device_id":"e"'),
        GOOD.replace(b'"device_id":"d"', b'"device_id":"d","patient_id":"q"'),
        # An escape in a string must not hide the extra quotes of a repeated key.
        GOOD.replace(b'"v":97.3', b'"v":97.3,"v":55.5').replace(b'"p"', b'"\\u0070"'),
        GOOD.replace(b'"readings"', b'"x":{"a":1,"a":2},"readings"'),  # nested, unread
    ],
)
def test_a_repeated_key_is_malformed_json_on_both_paths(body: bytes) -> None:
    assert fast_upload(body, NOW_MS, 10) is None  # the fast path never takes it
    with pytest.raises(Malformed) as refused:
        validate_upload(body, now_ms=NOW_MS, max_future_skew_s=300, max_readings=10)
    assert refused.value.code == "malformed_json"
    assert "repeated" in refused.value.detail


def test_the_plain_upload_still_takes_the_fast_path() -> None:
    assert fast_upload(GOOD, NOW_MS, 10) is not None
    escaped = GOOD.replace(b'"p"', b'"\\u0070"')  # taken, by the reference path
    assert fast_upload(escaped, NOW_MS, 10) is None
    assert validate_upload(escaped, now_ms=NOW_MS, max_future_skew_s=300, max_readings=10).rows


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_no_document_without_repeated_keys_is_refused(doc: object) -> None:
    raw = orjson.dumps(doc)
    refuse_repeated_keys(raw, orjson.loads(raw))  # never raises
    assert strings_in(doc) >= 0


@given(st.dictionaries(st.text(max_size=3), json_values, min_size=1, max_size=4), json_values)
def test_every_document_with_a_repeated_key_is_refused(
    doc: dict[str, object], extra: object
) -> None:
    raw = orjson.dumps(doc)
    key = orjson.dumps(next(iter(doc)))
    repeated = raw[:-1] + b"," + key + b":" + orjson.dumps(extra) + b"}"
    with pytest.raises(Malformed):
        refuse_repeated_keys(repeated, orjson.loads(repeated))


def test_a_document_too_deep_for_json_is_refused_not_crashed() -> None:
    deep = b'{"s":"\\u0041","a":' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(Malformed):
        refuse_repeated_keys(deep, orjson.loads(deep))


def test_aware_offsets_compare_without_overflow() -> None:
    east = timezone(timedelta(hours=14))
    assert bounds.time_problem(datetime(1, 1, 1, tzinfo=east)) is not None
    assert bounds.time_problem(datetime(2026, 1, 1, tzinfo=UTC)) is None

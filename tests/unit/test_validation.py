"""validate_upload: body bytes -> accepted readings and per-item rejections, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontdoor.errors import GatewayError, Malformed, NothingValid, TooLarge
from ingest.validation import validate_upload
from vitals.bounds import MAX_ID_CHARS
from vitals.catalog import GLUCOSE_MG_DL_PER_MMOL_L, METRICS

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SKEW_S = 300.0


def body(readings: Any, **envelope: Any) -> bytes:
    doc = {"device_id": "watch-8842", "patient_id": "p-00017", "readings": readings}
    doc.update(envelope)
    return orjson.dumps(doc)


def validate(raw: bytes, max_readings: int = 100):
    return validate_upload(raw, now_ms=NOW_MS, max_future_skew_s=SKEW_S, max_readings=max_readings)


def item(
    metric: str = "heart_rate",
    t: Any = "2026-11-22T10:00:00+08:00",
    v: Any = 72,
    unit: Any = "/min",
) -> dict[str, Any]:
    return {"metric": metric, "t": t, "v": v, "unit": unit}


def test_good_readings_come_out_in_canonical_units_and_utc_milliseconds() -> None:
    batch = validate(
        body(
            [
                item(),
                item("body_temp", "2026-11-22T01:59:00.250Z", 98.6, "[degF]"),
                item("glucose", "2026-11-21T21:00:00-05:00", 90, "mg/dL"),
                item("steps", "2026-11-22T02:00:00+00:00", 0, "{steps}"),
            ]
        )
    )
    assert (batch.device_id, batch.patient_id, batch.rejected) == ("watch-8842", "p-00017", ())
    hr, temp, glucose, steps = batch.readings
    assert (hr.metric, hr.t, hr.v, hr.unit) == ("heart_rate", NOW_MS, 72.0, "/min")
    assert temp.t == NOW_MS - 59_750
    assert (temp.unit, temp.v) == ("Cel", pytest.approx(37.0))
    assert glucose.t == NOW_MS
    assert (glucose.unit, glucose.v) == ("mmol/L", pytest.approx(90 / GLUCOSE_MG_DL_PER_MMOL_L))
    assert (steps.v, steps.unit) == (0.0, "{steps}")


@pytest.mark.parametrize(
    ("reading", "code"),
    [
        ("not an object", "bad_item"),
        ({"metric": "heart_rate", "t": "2026-11-22T10:00:00+08:00", "v": 72}, "bad_item"),
        (item(metric="blood_alcohol"), "unknown_metric"),
        (item(metric=42), "unknown_metric"),
        (item(t="yesterday"), "bad_timestamp"),
        (item(t=1_700_000_000), "bad_timestamp"),
        (item(t="2026-13-01T00:00:00Z"), "bad_timestamp"),
        (item(t="2026-11-22T10:00:00"), "timestamp_without_offset"),
        (item(t="2026-11-22"), "timestamp_without_offset"),
        (item(t="2026-11-22T02:05:00.001Z"), "future_timestamp"),  # skew + 1 ms
        (item(unit="furlongs"), "unknown_unit"),
        (item(unit=None), "unknown_unit"),
        (item("body_temp", v=37, unit="/min"), "unknown_unit"),  # another metric's unit
        (item(v="72"), "bad_value"),
        (item(v="NaN"), "bad_value"),
        (item(v=True), "bad_value"),
        (item(v=None), "bad_value"),
        (item(v=[72]), "bad_value"),
        (item(v=19.99), "out_of_range"),
        (item(v=300.01), "out_of_range"),
        (item("spo2", v=101, unit="%"), "out_of_range"),
        (item("body_temp", v=120, unit="degF"), "out_of_range"),  # 48.9 Cel after conversion
        (item("rr_interval", v=1e306, unit="s"), "out_of_range"),  # inf ms after conversion
    ],
)
def test_each_bad_reading_is_rejected_with_its_code_beside_a_good_one(
    reading: Any, code: str
) -> None:
    batch = validate(body([item(v=60), reading, item(t="2026-11-22T10:00:01+08:00", v=61)]))
    assert [r.v for r in batch.readings] == [60.0, 61.0]
    assert len(batch.rejected) == 1
    rejection = batch.rejected[0]
    assert (rejection.index, rejection.code) == (1, code)
    assert rejection.detail


def test_a_reading_just_inside_the_clock_skew_is_accepted() -> None:
    batch = validate(body([item(t="2026-11-22T02:05:00Z")]))
    assert batch.readings[0].t == NOW_MS + int(SKEW_S * 1000)


def test_boundaries_of_the_plausible_range_are_accepted() -> None:
    low, high = item(v=20), item(t="2026-11-22T10:00:01+08:00", v=300)
    batch = validate(body([low, high, item("steps", v=0, unit="steps")]))
    assert [r.v for r in batch.readings] == [20.0, 300.0, 0.0]


def test_a_second_value_for_a_metric_and_time_is_rejected_as_conflicting() -> None:
    same_instant = "2026-11-22T02:00:00Z"  # item()'s t, written in another offset
    batch = validate(
        body(
            [
                item(v=72),
                item(t=same_instant, v=140),  # another value: refused, the first stays
                item(v=72),  # the same value again: a repeat, stored once downstream
                item("spo2", v=97, unit="%"),  # another metric at that time
                item(v=140, t="2026-11-22T10:00:01+08:00"),  # another time
                item(v=72, unit="bpm"),  # units compare as canonical: a repeat...
                item(v=80, unit="{beats}/min"),  # ...and a conflict
            ]
        )
    )
    assert [(r.metric, r.v) for r in batch.readings] == [
        ("heart_rate", 72.0),
        ("heart_rate", 72.0),
        ("spo2", 97.0),
        ("heart_rate", 140.0),
        ("heart_rate", 72.0),
    ]
    assert [(r.index, r.code) for r in batch.rejected] == [
        (1, "conflicting_value"),
        (6, "conflicting_value"),
    ]
    assert batch.rejected[0].detail == (
        "heart_rate 140 /min at the same t as item 0 (72 /min):"
        " one value per metric, time and device"
    )


def test_a_rejected_item_is_not_the_value_a_later_one_conflicts_with() -> None:
    batch = validate(body([item(v=400), item(v=72), item(v=73)]))
    assert [r.v for r in batch.readings] == [72.0]
    assert [(r.index, r.code) for r in batch.rejected] == [
        (0, "out_of_range"),
        (2, "conflicting_value"),
    ]
    assert "item 1 (72 /min)" in batch.rejected[1].detail


def test_every_item_rejected_is_nothing_valid_with_all_rejections() -> None:
    with pytest.raises(NothingValid) as caught:
        validate(body([item(v=1000), item(unit="bpm!"), "x"]))
    assert caught.value.code == "nothing_valid"
    assert [(r.index, r.code) for r in caught.value.rejected] == [
        (0, "out_of_range"),
        (1, "unknown_unit"),
        (2, "bad_item"),
    ]


def test_empty_batch_is_nothing_valid() -> None:
    with pytest.raises(NothingValid) as caught:
        validate(body([]))
    assert (caught.value.code, caught.value.rejected) == ("empty_batch", ())


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"device_id": "d", "patient_id": "p", "readings": [', "malformed_json"),
        (b'{"v": NaN}', "malformed_json"),
        (b"\xff\xfe not utf-8", "malformed_json"),
        (b"", "malformed_json"),
        (b"[]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (body([item()], device_id=None), "bad_envelope"),
        (orjson.dumps({"patient_id": "p", "readings": [item()]}), "bad_envelope"),
        (body([item()], patient_id=""), "bad_envelope"),
        (body([item()], patient_id=17), "bad_envelope"),
        (body([item()], device_id="d" * (MAX_ID_CHARS + 1)), "bad_envelope"),
        (body({"0": item()}), "bad_envelope"),
        (orjson.dumps({"device_id": "d", "patient_id": "p"}), "bad_envelope"),
    ],
)
def test_a_bad_envelope_refuses_the_whole_upload(raw: bytes, code: str) -> None:
    with pytest.raises(Malformed) as caught:
        validate(raw)
    assert caught.value.code == code


def test_more_readings_than_allowed_is_too_large() -> None:
    validate(body([item()] * 3), max_readings=3)
    with pytest.raises(TooLarge) as caught:
        validate(body([item()] * 4), max_readings=3)
    assert caught.value.code == "too_many_readings"


# --- properties ---------------------------------------------------------------------

metric_names = st.sampled_from(sorted(METRICS))
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(metric_names, finite)
def test_a_value_in_the_canonical_unit_is_accepted_exactly_when_in_range(
    name: str, value: float
) -> None:
    metric = METRICS[name]
    # The second, valid item a minute later: one value per metric and time.
    raw = body([item(name, v=value, unit=metric.unit), item(t="2026-11-22T10:01:00+08:00")])
    batch = validate(raw)
    in_range = metric.low <= value <= metric.high
    assert (len(batch.readings) == 2) == in_range
    if in_range:
        assert batch.readings[0].v == value
    else:
        assert batch.rejected[0].code == "out_of_range"


@given(st.floats(min_value=30, max_value=45))
def test_fahrenheit_converts_to_the_same_celsius(celsius: float) -> None:
    fahrenheit = celsius * 9 / 5 + 32
    batch = validate(body([item("body_temp", v=fahrenheit, unit="[degF]")]))
    assert batch.readings[0].v == pytest.approx(celsius, abs=1e-9)
    assert batch.readings[0].unit == "Cel"


@given(st.floats(min_value=1, max_value=40))
def test_mg_per_dl_converts_to_the_same_mmol_per_l(mmol: float) -> None:
    batch = validate(body([item("glucose", v=mmol * GLUCOSE_MG_DL_PER_MMOL_L, unit="mg/dL")]))
    assert batch.readings[0].v == pytest.approx(mmol, rel=1e-12)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2026, 11, 21)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_the_same_instant_in_any_offset_gives_the_same_milliseconds(
    moment: datetime, offset_min: int
) -> None:
    instant = moment.replace(tzinfo=UTC)
    local = instant.astimezone(timezone(timedelta(minutes=offset_min)))
    batch = validate(body([item(t=instant.isoformat()), item(t=local.isoformat())]))
    expected = (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert [r.t for r in batch.readings] == [expected, expected]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
items = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "metric": st.one_of(metric_names, json_values),
            "t": st.one_of(
                st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
                st.datetimes().map(datetime.isoformat),
                json_values,
            ),
            "v": st.one_of(finite, json_values),
            "unit": st.one_of(
                st.sampled_from(["/min", "%", "Cel", "[degF]", "mg/dL", "ms", "s"]), json_values
            ),
        }
    ),
)


@given(st.lists(items, min_size=1, max_size=8))
def test_any_items_are_each_accepted_or_rejected_never_lost(readings: list[Any]) -> None:
    try:
        batch = validate(body(readings))
    except NothingValid as refused:
        assert [r.index for r in refused.rejected] == list(range(len(readings)))
        return
    assert len(batch.readings) + len(batch.rejected) == len(readings)
    for reading in batch.readings:
        metric = METRICS[reading.metric]
        assert reading.unit == metric.unit
        assert metric.low <= reading.v <= metric.high
        assert reading.t <= NOW_MS + SKEW_S * 1000


@given(json_values)
def test_any_json_document_is_answered_with_a_batch_or_a_gateway_error(doc: Any) -> None:
    try:
        validate(orjson.dumps(doc))
    except GatewayError as refused:
        assert refused.code and refused.status in (400, 413, 422)

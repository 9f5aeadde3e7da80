"""The fast path (ingest/fastitems.py) against the reference (validation.checked_upload):
validate_upload answers every body as the reference does (the same batch, or the same
refusal with the same code, detail and rejections), and the fast path takes the uploads
the reference accepts whole."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontdoor.errors import GatewayError
from ingest.fastitems import fast_upload
from ingest.validation import ITEM_FIELDS, Batch, checked_upload, validate_upload
from vitals.catalog import METRICS
from vitals.contract import Row

NOW_MS = int(datetime(2026, 11, 22, 2, 0, tzinfo=UTC).timestamp() * 1000)
SKEW_S = 300.0
LATEST_MS = NOW_MS + int(SKEW_S * 1000)
MAX = 8  # readings per upload

UNITS = sorted({u for m in METRICS.values() for u in (m.unit, *m.conversions)})
odd_text = st.text(max_size=12)
INTS = st.integers(-(2**63), 2**63 - 1)  # what JSON through orjson can carry


def _iso(moment: datetime, style: int) -> str:
    if style == 0:
        return moment.isoformat(timespec="milliseconds")
    if style == 1:
        return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if style == 2:
        return moment.isoformat()  # seconds, or microseconds when there are any
    return moment.isoformat(sep=" ", timespec="milliseconds")


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # not a string, or not a date
        return draw(st.one_of(st.none(), INTS, st.floats(), odd_text, st.lists(odd_text)))
    offset = timedelta(minutes=draw(st.integers(-16 * 60, 16 * 60)))
    tz = draw(st.sampled_from([UTC, timezone(offset), None]))
    # Around the clock's edge (future_timestamp), across days and years, and far away.
    ms = NOW_MS + draw(
        st.one_of(
            st.integers(-3_600_000, 600_000),
            st.integers(-(10**12), 10**11),
            st.sampled_from([299_999, 300_000, 300_001, -1, 0, 1]),
        )
    )
    micro = draw(st.sampled_from([0, 1, 999, 1000, 250_000, 999_999]))
    moment = datetime.fromtimestamp(ms // 1000, UTC) + timedelta(microseconds=micro)
    moment = moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None)
    text = _iso(moment, draw(st.integers(0, 3)))
    if kind == 1 and "." in text:  # more digits than microseconds: fromisoformat truncates
        text = text.replace(".", ".9", 1)
    if kind == 2:  # other ISO 8601 spellings fromisoformat takes, and some it does not
        text = draw(st.sampled_from(ODD_TIMES))
    return text


ODD_TIMES = [
    "20261122T100000Z",
    "2026-11-22T10:00Z",
    "2026-W47-1T10:00Z",
    "2026-11-22T10:00:00.5+05:30:15",
    "2026-11-22T10:00:00.0009995-05:00",
    "2026-11-22T10:00:00z",
    "2026-11-22T24:00:00Z",
    "2026-11-22T10:00:00+24:00",
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999+00:00",
    "1969-12-31T23:59:59.999500Z",
    "2026-11-22",
    "",
]


values = st.one_of(
    st.integers(-10, 400),
    st.floats(-10, 4000, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([20, 300, 19.999, 300.0001, 0, 1, 4, 100_000, 3000, 0.2, 3.0]),
    st.none(),
    st.booleans(),
    odd_text,
)


@st.composite
def items(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.one_of(st.none(), INTS, odd_text, st.lists(INTS)))
    name = draw(st.one_of(st.sampled_from(sorted(METRICS)), odd_text, st.none(), INTS))
    if isinstance(name, str) and name in METRICS and draw(st.booleans()):
        metric = METRICS[name]
        unit: Any = draw(st.sampled_from([metric.unit, *metric.conversions]))
    else:
        unit = draw(st.one_of(st.sampled_from(UNITS), odd_text, st.none(), st.lists(odd_text)))
    item: dict[str, Any] = {
        "metric": name,
        "t": draw(timestamps()),
        "v": draw(values),
        "unit": unit,
    }
    if kind == 1:
        del item[draw(st.sampled_from(sorted(item)))]
    if kind == 2:
        item["extra"] = draw(odd_text)
    return item


def _outcome(validate: Any, raw: bytes) -> Any:
    try:
        return validate(raw)
    except GatewayError as refusal:
        return (type(refusal), refusal.code, refusal.detail, getattr(refusal, "rejected", None))


def _fast(raw: bytes) -> Any:
    return validate_upload(raw, now_ms=NOW_MS, max_future_skew_s=SKEW_S, max_readings=MAX)


def _reference(raw: bytes) -> Any:
    return checked_upload(raw, latest_ms=LATEST_MS, max_readings=MAX)


def _agree(raw: bytes) -> None:
    fast = fast_upload(raw, LATEST_MS, MAX)
    reference = _outcome(_reference, raw)
    assert _outcome(_fast, raw) == reference
    if fast is not None and isinstance(reference, Batch):
        # As the wire has them: the same bytes (== would take -0.0 for 0.0).
        assert orjson.dumps(reference.rows) == orjson.dumps(fast[2])
    if isinstance(reference, Batch) and not reference.rejected and _plain(raw):
        # The common upload takes the fast path; one giving a metric and time twice (an
        # exact repeat: a conflicting value is rejected) is left to the reference.
        assert (fast is not None) == _distinct(reference.rows)


def _distinct(rows: tuple[Row, ...]) -> bool:
    return len({(metric, t) for metric, t, _, _ in rows}) == len(rows)


def _plain(raw: bytes) -> bool:
    """The documented shape, no repeated field and no escape: what the fast path is for
    (a backslash sends the body to the reference path, ingest/jsonkeys.py says why)."""
    doc = orjson.loads(raw)
    return (
        b"\\" not in raw
        and set(doc) == {"device_id", "patient_id", "readings"}
        and all(set(i) == set(ITEM_FIELDS) for i in doc["readings"])
        and raw.count(b'"v"') == len(doc["readings"])
    )


ids = st.one_of(
    st.sampled_from(["watch-8842", "p-00017", "é", "e\u0301", " p", "p\u200b"]),
    st.text(max_size=6),
    st.integers(0, 3),
    st.none(),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    envelope: dict[str, Any] = {
        "device_id": draw(st.one_of(st.just("watch-8842"), ids)),
        "patient_id": draw(st.one_of(st.just("p-00017"), ids)),
        "readings": draw(st.lists(items(), max_size=MAX + 1)),
    }
    if draw(st.integers(0, 9)) == 0:
        envelope["extra"] = draw(st.one_of(odd_text, INTS))
    if draw(st.integers(0, 19)) == 0:
        del envelope[draw(st.sampled_from(sorted(envelope)))]
    return orjson.dumps(envelope)


@settings(max_examples=1200, deadline=None)
@given(bodies())
def test_validate_upload_answers_every_body_as_the_reference(raw: bytes) -> None:
    _agree(raw)


def _one(
    v: str = "72",
    t: str = '"2026-11-22T10:00:00+08:00"',
    extra: str = "",
    metric: str = "heart_rate",
) -> bytes:
    unit = METRICS[metric].unit
    item = f'{{"metric":"{metric}","t":{t},"v":{v},"unit":"{unit}"{extra}}}'
    return f'{{"device_id":"d","patient_id":"p","readings":[{item}]}}'.encode()


NUMBER = r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?"


@settings(max_examples=600, deadline=None)
@given(st.from_regex(NUMBER, fullmatch=True))
def test_numbers_as_written_are_read_as_orjson_reads_them(number: str) -> None:
    _agree(_one(v=number))


@pytest.mark.parametrize(
    "raw",
    [
        _one("-0", metric="steps"),  # an integer: 0.0, as orjson reads it
        _one("-0.0", metric="steps"),
        _one("-0e0", metric="steps"),
        _one("1e400"),
        _one("18446744073709551616"),
        _one("9" * 400),  # msgspec: out of range; orjson: a float, out of the metric's range
        _one("72", extra=',"v":500'),  # a repeated field: the last counts
        _one("500", extra=',"v":72'),
        _one("72", extra=',"v":true'),
        _one("true", extra=',"v":72'),
        _one("72", extra=',"x":1e400'),  # JSON orjson refuses inside an extra field
        _one("72", extra=',"x":' + "[" * 2000 + "]" * 2000),
        _one("72", t=r'"2026-11-22T10:00:00\u002b08:00"'),  # an escaped "+"
        _one("72", t=r'"\ud800"'),  # a lone surrogate: not valid JSON text for orjson
        _one("72 "),
        b'{"device_id":"d","patient_id":"p","readings":[]}',
        rb'{"device_id":"d\u0000","patient_id":"p","readings":[]}',
        b'{"device_id":"d","device_id":"","patient_id":"p","readings":[]}',
        b"[]",
        b"",
        b"\xef\xbb\xbf{}",
    ],
)
def test_edges_are_answered_as_the_reference(raw: bytes) -> None:
    _agree(raw)


# Values written in a unit other than the canonical one: around the range, either side.
OTHER_UNIT_VALUES = {"[degF]": (80, 120), "degF": (80, 120), "mg/dL": (10, 800), "s": (0.1, 3.2)}


@st.composite
def valid_items(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(METRICS)))
    metric = METRICS[name]
    unit = draw(st.sampled_from([metric.unit, *metric.conversions]))
    low, high = OTHER_UNIT_VALUES.get(unit, (metric.low - 1, metric.high + 1))
    value = draw(st.one_of(st.floats(low, high), st.integers(math.ceil(low), math.floor(high))))
    back_us = draw(st.integers(-300_000_010, 10**13))  # a few just past the clock's skew
    moment = datetime.fromtimestamp(NOW_MS // 1000, UTC) - timedelta(microseconds=back_us)
    offset = timedelta(minutes=draw(st.integers(-16 * 60, 16 * 60)))
    moment = moment.astimezone(draw(st.sampled_from([UTC, timezone(offset)])))
    t = _iso(moment, draw(st.integers(0, 3)))
    return {"metric": name, "t": t, "v": value, "unit": unit}


@settings(max_examples=1000, deadline=None)
@given(st.lists(valid_items(), min_size=1, max_size=4))
def test_uploads_of_valid_readings_take_the_fast_path_with_the_same_rows(
    readings: list[dict[str, Any]],
) -> None:
    _agree(orjson.dumps({"device_id": "d", "patient_id": "p", "readings": readings}))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(METRICS)), st.integers(-(10**9), 299_999)),
        min_size=1,
        max_size=MAX,
        unique=True,  # one value per metric and time
    )
)
def test_valid_uploads_take_the_fast_path_in_many_time_zones(picks: list[tuple[str, int]]) -> None:
    readings = []
    for i, (name, back_ms) in enumerate(picks):
        metric = METRICS[name]
        moment = datetime.fromtimestamp((NOW_MS + back_ms) / 1000, UTC)
        moment = moment.astimezone(timezone(timedelta(minutes=(i * 97) % 1500 - 720)))
        value = (metric.low + metric.high) / 2
        readings.append({"metric": name, "t": moment.isoformat(), "v": value, "unit": metric.unit})
    raw = orjson.dumps({"device_id": "d", "patient_id": "p", "readings": readings})
    assert fast_upload(raw, LATEST_MS, MAX) is not None
    _agree(raw)

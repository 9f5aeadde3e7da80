"""The all-valid fast path (ingest/fastitems.py) against the reference checks
(validation.check_items): whenever the fast path answers, it answers the same rows, and
it answers for every upload the reference accepts whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.fastitems import fast_rows
from ingest.validation import check_items, validate_upload
from vitals.catalog import METRICS

NOW_MS = int(datetime(2026, 11, 22, 2, 0, tzinfo=UTC).timestamp() * 1000)
LATEST_MS = NOW_MS + 300_000

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


def _agree(batch: list[Any]) -> None:
    items_ = orjson.loads(orjson.dumps(batch))  # what the gateway sees: JSON's types
    fast = fast_rows(items_, LATEST_MS)
    rows, rejected = check_items(items_, LATEST_MS)
    if fast is not None:
        assert not rejected
        assert fast == rows
        assert [tuple(map(type, r)) for r in fast] == [tuple(map(type, r)) for r in rows]
    else:
        # "Not sure" only where the reference rejects something.
        assert rejected


@settings(max_examples=1500, deadline=None)
@given(st.lists(items(), min_size=1, max_size=8))
@example([{"metric": "heart_rate", "t": "2026-11-22T02:05:00Z", "v": 300, "unit": "bpm"}])
@example([{"metric": "heart_rate", "t": "2026-11-22T02:05:00.001Z", "v": 72, "unit": "/min"}])
@example([{"metric": "body_temp", "t": "2026-11-22T01:59:00.250Z", "v": 98.6, "unit": "[degF]"}])
@example(
    [{"metric": "glucose", "t": "2026-11-21T21:00:00.0009995-05:00", "v": 90, "unit": "mg/dL"}]
)
def test_the_fast_path_answers_what_the_reference_answers(batch: list[Any]) -> None:
    _agree(batch)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(METRICS)), st.integers(-(10**9), 299_999)), max_size=60
    )
)
def test_valid_uploads_take_the_fast_path_in_many_time_zones(picks: list[tuple[str, int]]) -> None:
    batch = []
    for i, (name, back_ms) in enumerate(picks):
        metric = METRICS[name]
        moment = datetime.fromtimestamp((NOW_MS + back_ms) / 1000, UTC)
        moment = moment.astimezone(timezone(timedelta(minutes=(i * 97) % 1500 - 720)))
        value = (metric.low + metric.high) / 2
        batch.append({"metric": name, "t": moment.isoformat(), "v": value, "unit": metric.unit})
    items_ = orjson.loads(orjson.dumps(batch))
    rows, rejected = check_items(items_, LATEST_MS)
    assert not rejected
    assert fast_rows(items_, LATEST_MS) == rows


def test_validate_upload_gives_the_reference_rows_and_rejections() -> None:
    good = {"metric": "heart_rate", "t": "2026-11-22T10:00:00+08:00", "v": 72, "unit": "bpm"}
    bad = {**good, "v": 1000}
    for readings in ([good, good], [good, bad, good]):
        raw = orjson.dumps({"device_id": "d", "patient_id": "p", "readings": readings})
        batch = validate_upload(raw, now_ms=NOW_MS, max_future_skew_s=300, max_readings=10)
        rows, rejected = check_items(orjson.loads(raw)["readings"], LATEST_MS)
        assert (list(batch.rows), list(batch.rejected)) == (rows, rejected)
        assert [r.v for r in batch.readings] == [r[2] for r in rows]

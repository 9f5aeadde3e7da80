"""Body bytes -> the readings to accept and the items rejected, without any HTTP.

The envelope must be right or the whole upload is refused (Malformed, TooLarge,
NothingValid); each reading is then checked on its own and rejected with a stable code,
so one bad item never costs the good ones beside it. An upload of the documented shape
whose items are all valid is taken by ingest/fastitems.py (msgspec and a tighter loop);
any other goes through the checks here, which say why each item is rejected (one dict
lookup for metric and unit, timestamps parsed once per distinct string).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from frontdoor.errors import Malformed, NothingValid, Rejection, TooLarge
from ingest.fastitems import fast_upload
from ingest.jsonkeys import refuse_repeated_keys
from vitals.bounds import epoch_ms, identifier_problem, ms_problem
from vitals.catalog import METRICS, Metric
from vitals.contract import Reading, Row

ITEM_FIELDS = ("metric", "t", "v", "unit")


@dataclass(frozen=True, slots=True)
class Batch:
    """What survives validation: at least one reading, in canonical units, as wire rows
    (what the Kafka message carries; `readings` names their fields)."""

    device_id: str
    patient_id: str
    rows: tuple[Row, ...]
    rejected: tuple[Rejection, ...]
    # Where each row came from, in the numbering `rejected` uses (an item of `readings`, an
    # entry of a FHIR Bundle); None: the JSON upload's, where validation kept the items'
    # order and dropped only the ones it rejected.
    sources: tuple[int, ...] | None = None

    @property
    def readings(self) -> tuple[Reading, ...]:
        return tuple(map(Reading._make, self.rows))

    def origins(self) -> tuple[int, ...]:
        """Each row's index in the upload (see `sources`)."""
        if self.sources is not None:
            return self.sources
        rejected_at = {r.index for r in self.rejected}
        count = len(self.rows) + len(self.rejected)
        return tuple(i for i in range(count) if i not in rejected_at)


class _Rejected(Exception):
    def __init__(self, code: str, detail: str) -> None:
        self.code, self.detail = code, detail


def validate_upload(
    body: bytes, *, now_ms: int, max_future_skew_s: float, max_readings: int
) -> Batch:
    """The upload's valid readings and per-item rejections; raises if nothing can be taken."""
    latest_ms = now_ms + int(max_future_skew_s * 1000)
    fast = fast_upload(body, latest_ms, max_readings)
    if fast is not None:  # the documented shape, every item valid: the common upload
        device_id, patient_id, rows = fast
        if identifier_problem(device_id) is None and identifier_problem(patient_id) is None:
            return Batch(device_id, patient_id, tuple(rows), ())
    return checked_upload(body, latest_ms=latest_ms, max_readings=max_readings)


def checked_upload(body: bytes, *, latest_ms: int, max_readings: int) -> Batch:
    """The reference path: validate_upload without the fast path, every refusal and
    rejection with its code and detail."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed("malformed_json", f"body is not valid JSON: {exc}") from None
    refuse_repeated_keys(body, doc)
    if not isinstance(doc, dict):
        raise Malformed("not_an_object", f"body must be a JSON object, not {_kind(doc)}")
    device_id = _identifier(doc, "device_id")
    patient_id = _identifier(doc, "patient_id")
    items = doc.get("readings")
    if not isinstance(items, list):
        raise Malformed("bad_envelope", f"readings must be a list, not {_kind(items)}")
    if len(items) > max_readings:
        raise TooLarge(
            "too_many_readings",
            f"{len(items)} readings in one upload; at most {max_readings}: split the batch",
        )
    if not items:
        raise NothingValid("empty_batch", "readings is empty")

    rows, rejected = check_items(items, latest_ms)
    if not rows:
        raise NothingValid("nothing_valid", "every reading was rejected", rejected)
    return Batch(device_id, patient_id, tuple(rows), tuple(rejected))


def check_items(items: list[Any], latest_ms: int) -> tuple[list[Row], list[Rejection]]:
    """Each item checked on its own, a rejection saying why; then against the items
    accepted before it: one value per metric and time (the upload has one device)."""
    rows: list[Row] = []
    rejected: list[Rejection] = []
    times: dict[str, int] = {}  # t as sent -> ms: a device's readings share instants
    # (metric, t) -> (index, value) of the first item accepted for it
    firsts: dict[tuple[str, int], tuple[int, float]] = {}
    for index, item in enumerate(items):
        try:
            row = _reading(item, latest_ms, times)
        except _Rejected as why:
            rejected.append(Rejection(index, why.code, why.detail))
            continue
        first = firsts.setdefault((row[0], row[1]), (index, row[2]))
        if first[1] != row[2]:
            # Downstream the first value is the reading of record (docs/wire-format.md):
            # refused here, the client learns it at once instead of never.
            rejected.append(Rejection(index, "conflicting_value", _conflict(row, *first)))
            continue
        rows.append(row)  # an exact repeat too: stored once downstream, as a retry is
    return rows, rejected


def _conflict(row: Row, first: int, value: float) -> str:
    metric, _, v, unit = row
    return (
        f"{metric} {v:g} {unit} at the same t as item {first} ({value:g} {unit}):"
        " one value per metric, time and device"
    )


# (metric, unit as sent) -> the metric and the conversion to its canonical unit (None:
# already canonical). One lookup answers "known metric?", "accepted unit?" and "how to
# convert" for the common, valid reading.
_UNITS: dict[tuple[str, str], tuple[Metric, Callable[[float], float] | None]] = {
    (name, unit): (metric, convert)
    for name, metric in METRICS.items()
    for unit, convert in ((metric.unit, None), *metric.conversions.items())
}


def _reading(item: Any, latest_ms: int, times: dict[str, int]) -> Row:
    """One item as a canonical reading. Checked in a fixed order (item, metric, timestamp,
    unit, value, range), so an item with several faults always gets the same code."""
    if type(item) is not dict:
        raise _Rejected("bad_item", f"a reading must be an object, not {_kind(item)}")
    try:
        name, t, value, unit = item["metric"], item["t"], item["v"], item["unit"]
    except KeyError as missing:
        raise _Rejected(
            "bad_item", f"a reading needs {', '.join(ITEM_FIELDS)}; {missing.args[0]} is missing"
        ) from None

    try:
        found = _UNITS.get((name, unit))
    except TypeError:  # a list or an object where a string belongs
        found = None
    if found is None and (type(name) is not str or name not in METRICS):
        raise _Rejected("unknown_metric", f"unknown metric {_show(name)}")

    try:
        t_ms = times.get(t)
    except TypeError:
        t_ms = None
    if t_ms is None:
        t_ms = _epoch_ms(t)  # raises unless t is a string
        times[t] = t_ms
    if t_ms > latest_ms:
        raise _Rejected("future_timestamp", f"t {t} is ahead of the gateway's clock")
    problem = ms_problem(t_ms)
    if problem is not None:  # years before the epoch, or the ends of the calendar
        raise _Rejected("time_out_of_range", f"t {_show(t)} {problem}")

    if found is None:
        metric = METRICS[name]
        accepted = ", ".join((metric.unit, *metric.conversions))
        raise _Rejected(
            "unknown_unit",
            f"unit {_show(unit)} not accepted for {metric.name}; use one of: {accepted}",
        )
    metric, convert = found

    # bool is an int subclass in Python: true/false are not measurements.
    kind = type(value)
    if kind is not float:
        if kind is not int:
            raise _Rejected("bad_value", f"v must be a number, not {_kind(value)}")
        value = float(value)
    canonical = value if convert is None else convert(value)
    if not metric.low <= canonical <= metric.high:
        raise _Rejected(
            "out_of_range",
            f"{metric.name} {canonical:g} {metric.unit} is outside {metric.low:g}..{metric.high:g}",
        )
    return (metric.name, t_ms, canonical, metric.unit)


def _epoch_ms(t: Any) -> int:
    if not isinstance(t, str):
        raise _Rejected("bad_timestamp", f"t must be an ISO 8601 string, not {_kind(t)}")
    try:
        moment = datetime.fromisoformat(t)
    except ValueError:
        raise _Rejected("bad_timestamp", f"t {_show(t)} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise _Rejected(
            "timestamp_without_offset", f"t {_show(t)} has no UTC offset (add Z or +hh:mm)"
        )
    return epoch_ms(moment)


def _identifier(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field)
    problem = identifier_problem(value)
    if problem is not None:
        raise Malformed("bad_envelope", f"{field} {problem}")
    return value  # type: ignore[return-value]  # identifier_problem checked it is a str


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), "a number")


def _show(value: Any) -> str:
    """A client's value quoted back to it, cut short so a detail stays a line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

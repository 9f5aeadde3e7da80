"""The readings of an upload whose every item is plainly valid: decoded by msgspec into
typed structs, one per metric (C code checks the fields, their types, the units and most
ranges), then one tight loop for the timestamps and the ranges after a conversion.

validation.py's reference path says why an upload is refused or an item rejected, with a
code and a detail; this path only says "all valid, here are the rows" or "not sure":
None, and then the reference path decodes the body again (orjson) and answers. Not sure
is any body that is not exactly the documented shape (an extra field, a type msgspec
refuses, a repeated key, a backslash escape: the reference decides those), any item the
reference would reject, and any metric and time given twice (a repeat or a conflicting
value: rare, and the reference tells them apart). Where it answers, it answers what the
reference would: the same catalog entries, `datetime.fromisoformat`, the same float
conversion
(tests/unit/test_fastitems.py compares the two).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, Union

import msgspec

from vitals.bounds import EARLIEST_MS, LATEST_MS
from vitals.catalog import METRICS, Metric, identity
from vitals.contract import Row


def _item_struct(metric: Metric) -> type[msgspec.Struct]:
    """A reading of `metric`, tagged by its name: msgspec checks that the unit is one the
    metric accepts and, when no unit needs a conversion, that the value is in range."""
    units = (metric.unit, *metric.conversions)
    in_range = msgspec.Meta(ge=metric.low, le=metric.high)
    fields = [
        ("t", str),
        # An integer literal as float(orjson's int): "-0" is 0.0, not -0.0 (tested).
        ("v", float if _scaled(metric) else Annotated[float, in_range]),
        ("unit", Literal[units]),
    ]
    return msgspec.defstruct(
        f"Reading_{metric.name}",
        fields,
        tag_field="metric",
        tag=metric.name,
        forbid_unknown_fields=True,
    )


def _scaled(metric: Metric) -> bool:
    """Whether some accepted unit needs a conversion (the range applies after it)."""
    return any(convert is not identity for convert in metric.conversions.values())


Scaled = tuple[dict[str, Callable[[float], float]], float, float]  # conversions, low, high
# struct -> (metric, canonical unit, what is left to check here: None, or for a metric
# with a unit to convert, the conversions and the range).
_KINDS: dict[type, tuple[str, str, Scaled | None]] = {
    _item_struct(m): (m.name, m.unit, (m.conversions, m.low, m.high) if _scaled(m) else None)
    for m in METRICS.values()
}


# Unknown fields are refused, not skipped: orjson refuses some JSON msgspec would skip
# over unread (1e400, deep nesting), and the reference must answer those.
class _Upload(msgspec.Struct, forbid_unknown_fields=True):
    device_id: str
    patient_id: str
    readings: list[Union[tuple(_KINDS)]]  # type: ignore[valid-type]  # noqa: UP007


_decode = msgspec.json.Decoder(_Upload).decode

_fromisoformat = datetime.fromisoformat
_metric_and_time = operator.itemgetter(0, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MS_PER_DAY = 86_400_000


def fast_upload(
    body: bytes, latest_ms: int, max_readings: int
) -> tuple[str, str, list[Row]] | None:
    """(device_id, patient_id, every item as a canonical row), or None unless the body is
    the documented shape with 1 to max_readings items, all valid. The ids are still to be
    checked (validation.identifier_problem)."""
    try:
        upload = _decode(body)
    except msgspec.MsgspecError:
        return None
    items = upload.readings
    if not items or len(items) > max_readings:
        return None
    # msgspec keeps the last of a repeated key; the reference path refuses them
    # (ingest/jsonkeys.py). Free of backslashes, a body of the documented shape without a
    # repeated key has exactly this many quotes: 2 per key and string value (3 + 2
    # envelope, 4 + 3 per reading); a repeated key adds at least 2.
    if body.count(b'"') != 10 + 14 * len(items) or b"\\" in body:
        return None
    latest_ms = min(latest_ms, LATEST_MS - 1)  # the accepted range (vitals/bounds.py)
    times: dict[str, int] = {}  # t as sent -> ms: a device's readings share instants
    rows: list[Row] = []
    append = rows.append
    base: datetime | None = None
    base_ms = base_sub_ms = 0
    try:
        for item in items:
            t = item.t
            t_ms = times.get(t)
            if t_ms is None:
                moment = _fromisoformat(t)
                if moment.tzinfo is None:
                    return None
                if base is None:
                    # Exact milliseconds (timedelta arithmetic, no float) for the first...
                    since = moment - _EPOCH
                    base, base_ms, base_sub_ms = moment, since // _MS, since.microseconds % 1000
                    t_ms = base_ms
                else:
                    # ...and for the others from their (exact) distance to it: cheaper than
                    # a timedelta division each, same integer.
                    d = moment - base
                    t_ms = (
                        base_ms
                        + d.days * _MS_PER_DAY
                        + d.seconds * 1000
                        + (base_sub_ms + d.microseconds) // 1000
                    )
                # Checked once per distinct t: every time in `times` is in range.
                if not EARLIEST_MS <= t_ms <= latest_ms:
                    return None
                times[t] = t_ms
            name, unit, scaled = _KINDS[type(item)]
            value = item.v
            if scaled is not None:
                conversions, low, high = scaled
                convert = conversions.get(item.unit)  # None: the canonical unit
                if convert is not None:
                    value = convert(value)
                if not low <= value <= high:
                    return None
            append((name, t_ms, value, unit))
    except ValueError:  # t is not an ISO 8601 date-time
        return None
    if len(set(map(_metric_and_time, rows))) < len(rows):
        return None  # a repeated (metric, t): a repeat or a conflict, the reference decides
    return upload.device_id, upload.patient_id, rows

"""The readings of an upload whose every item is plainly valid: decoded by msgspec into
typed structs (C code checks the envelope's and items' fields and types), then one tight
loop for the catalog's units and ranges and the timestamps.

validation.py's reference path says why an upload is refused or an item rejected, with a
code and a detail; this path only says "all valid, here are the rows" or "not sure":
None, and then the reference path decodes the body again (orjson) and answers. Not sure
is any body that is not exactly the documented shape (an extra field, a type msgspec
refuses, a duplicate field it reads differently: the reference decides those) and any
item the reference would reject. Where it answers, it answers what the reference would:
the same catalog entries, `datetime.fromisoformat`, the same float conversion
(tests/unit/test_fastitems.py compares the two).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec

from vitals.catalog import METRICS
from vitals.contract import Row


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    metric: str
    t: str
    # An integer literal as float(orjson's int): "-0" is 0.0, not -0.0 (tested).
    v: float
    unit: str


# Unknown fields are refused, not skipped: orjson refuses some JSON msgspec would skip
# over unread (1e400, deep nesting), and the reference must answer those.
class _Upload(msgspec.Struct, forbid_unknown_fields=True):
    device_id: str
    patient_id: str
    readings: list[_Item]


_decode = msgspec.json.Decoder(_Upload).decode

# (metric, unit as sent) -> (metric, canonical unit, low, high, conversion; None when the
# unit is the canonical one). The same catalog entries as validation._UNITS.
_RULES: dict[tuple[str, str], tuple[str, str, float, float, Callable[[float], float] | None]] = {
    (name, unit): (metric.name, metric.unit, metric.low, metric.high, convert)
    for name, metric in METRICS.items()
    for unit, convert in ((metric.unit, None), *metric.conversions.items())
}

_fromisoformat = datetime.fromisoformat
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
    times: dict[str, int] = {}  # t as sent -> ms: a device's readings share instants
    rows: list[Row] = []
    append = rows.append
    base: datetime | None = None
    base_ms = base_sub_ms = 0
    try:
        for item in items:
            rule = _RULES.get((item.metric, item.unit))
            if rule is None:
                return None
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
                times[t] = t_ms
            if t_ms > latest_ms:
                return None
            value = item.v
            name, unit, low, high, convert = rule
            if convert is not None:
                value = convert(value)
            if not low <= value <= high:
                return None
            append((name, t_ms, value, unit))
    except ValueError:  # t is not an ISO 8601 date-time
        return None
    return upload.device_id, upload.patient_id, rows

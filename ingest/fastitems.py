"""The readings of an upload whose every item is plainly valid, in one tight loop.

validation.py's per-item checks (`_reading`) say why an item is rejected, with a code and
a detail; this loop only says "all valid, here are the rows" or "not sure": None, and then
the reference path checks the items again and answers. It runs the same checks on the
same values (the catalog's units, ranges and conversions, `datetime.fromisoformat`), so
on every upload it answers, it answers what the reference path would
(tests/unit/test_fastitems.py compares the two).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from vitals.catalog import METRICS
from vitals.contract import Row

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


def fast_rows(items: list[Any], latest_ms: int) -> list[Row] | None:
    """Every item as a canonical row, or None unless every item is valid."""
    times: dict[str, int] = {}  # t as sent -> ms: a device's readings share instants
    rows: list[Row] = []
    append = rows.append
    base: datetime | None = None
    base_ms = base_sub_ms = 0
    try:
        for item in items:
            if type(item) is not dict:
                return None
            rule = _RULES.get((item["metric"], item["unit"]))  # unhashable: TypeError
            if rule is None:
                return None
            t = item["t"]
            t_ms = times.get(t)
            if t_ms is None:
                if type(t) is not str:
                    return None
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
            value = item["v"]
            kind = type(value)
            if kind is not float:
                if kind is not int:  # bool, str, null, list, object
                    return None
                value = float(value)
            name, unit, low, high, convert = rule
            if convert is not None:
                value = convert(value)
            if not low <= value <= high:
                return None
            append((name, t_ms, value, unit))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return rows

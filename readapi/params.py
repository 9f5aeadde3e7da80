"""Query parameters of the read API, checked by pure functions (no HTTP, no database).

Every refusal is a Malformed (400) with a code of its own, rendered as problem+json by
frontdoor/problems.py. Cursors are opaque to clients: base64url JSON and an HMAC over it and
the patient, series and resolution they were issued for (the key: VITALS_API_CURSOR_KEY),
so a cursor changed, forged, or reused for another patient or with other parameters is
refused rather than silently skipping or repeating rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from frontdoor.errors import Malformed
from vitals import bounds
from vitals.catalog import METRICS

RESOLUTIONS = ("raw", "1m", "1h", "auto")
DEFAULT_LIMIT = 1_000
# resolution=auto: the finest level whose page count stays small over the range.
# 6 h of raw readings at one a second is 21,600 rows; 7 days per minute 10,080 buckets;
# beyond that hourly (a year is 8,760 buckets).
AUTO_RAW_UP_TO = timedelta(hours=6)
AUTO_1M_UP_TO = timedelta(days=7)
ALERT_STATES = ("opened", "resolved")
# Open ends of a range: the ends of the accepted range (vitals/bounds.py).
EARLIEST = bounds.EARLIEST
LATEST = bounds.LATEST
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_MAC_BYTES = 16  # 128 bits: forging one is out of reach, and the cursor stays short


def only(query: Mapping[str, Sequence[str]], allowed: Sequence[str]) -> dict[str, str]:
    """The single value of each parameter; unknown or repeated parameters are refused
    (a typo such as `form=` must not silently widen the range)."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise Malformed(
            "unknown_parameter",
            f"unknown query parameter(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}",
        )
    values: dict[str, str] = {}
    for name, given in query.items():
        if len(given) != 1:
            raise Malformed("repeated_parameter", f"{name} is given {len(given)} times")
        values[name] = given[0]
    return values


def patient(patient_id: str) -> str:
    """The path's patient id, if it follows the grammar every door checks (a NUL, say,
    would otherwise reach PostgreSQL, which refuses it)."""
    problem = bounds.identifier_problem(patient_id)
    if problem is not None:
        raise Malformed("bad_patient_id", f"the patient id {problem}")
    return patient_id


def metric(value: str | None) -> str:
    if not value:
        raise Malformed("missing_parameter", "metric is required")
    if value not in METRICS:
        raise Malformed(
            "unknown_metric", f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}"
        )
    return value


def optional_moment(name: str, value: str | None) -> datetime | None:
    return None if value is None or value == "" else moment(name, value)


def moment(name: str, value: str | None) -> datetime:
    """An ISO 8601 time with an offset (or Z), as UTC."""
    if value is None or value == "":
        raise Malformed("missing_parameter", f"{name} is required (ISO 8601 with offset)")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(
            "bad_time",
            f"{name} is not an ISO 8601 time: {value[:40]!r} (send + as %2B in a URL)",
        ) from None
    problem = bounds.time_problem(parsed)
    if problem is not None:  # checked before the shift to UTC, which overflows at the ends
        raise Malformed("bad_time", f"{name} {problem}")
    return parsed.astimezone(UTC)


def open_window(q: Mapping[str, str]) -> tuple[datetime, datetime]:
    """`from` and `to`, either left out for an open end of the range."""
    start = optional_moment("from", q.get("from")) or EARLIEST
    end = optional_moment("to", q.get("to")) or LATEST
    window(start, end)
    return start, end


def window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise Malformed("bad_range", "from must be before to")


def limit(value: str | None, most: int) -> int:
    if value is None:
        return min(DEFAULT_LIMIT, most)
    try:
        number = int(value)
    except ValueError:
        raise Malformed("bad_limit", f"limit must be an integer from 1 to {most}") from None
    if not 1 <= number <= most:
        raise Malformed("bad_limit", f"limit must be an integer from 1 to {most}")
    return number


def resolution(value: str | None, start: datetime, end: datetime) -> str:
    """raw, 1m or 1h; auto (the default) chooses by the length of the range."""
    chosen = value or "auto"
    if chosen not in RESOLUTIONS:
        raise Malformed("bad_resolution", f"resolution must be one of {', '.join(RESOLUTIONS)}")
    if chosen != "auto":
        return chosen
    span = end - start
    if span <= AUTO_RAW_UP_TO:
        return "raw"
    return "1m" if span <= AUTO_1M_UP_TO else "1h"


def state(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in ALERT_STATES:
        raise Malformed("bad_state", f"state must be one of {', '.join(ALERT_STATES)}")
    return value


# --- cursors -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: strictly after (`at`, `tie`) in the page's order.

    `scope` is what the cursor was issued for (e.g. "readings:p-1:heart_rate:raw"; it is
    signed, not carried); `tie` breaks ties at the same instant (a device id; an alert id
    and state).
    """

    scope: str
    at: datetime
    tie: tuple[str, ...] = ()


def encode_cursor(cursor: Cursor, key: bytes) -> str:
    micros = (cursor.at - _EPOCH) // _MICRO  # exact: no float rounding of the instant
    raw = orjson.dumps([micros, list(cursor.tie)])
    return f"{_b64(raw)}.{_b64(_mac(key, cursor.scope, raw))}"


def decode_cursor(value: str | None, scope: str, key: bytes) -> Cursor | None:
    if value is None:
        return None
    body, _, mac = value.partition(".")
    try:
        raw, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raw = given = b""
    # The MAC first: nothing of a cursor this API did not issue is parsed.
    if not hmac.compare_digest(given, _mac(key, scope, raw)):
        raise Malformed(
            "bad_cursor",
            "cursor is not one this API issued for this patient, metric, resolution or listing",
        )
    micros, tie = orjson.loads(raw)
    return Cursor(scope, _EPOCH + micros * _MICRO, tuple(tie))


def _mac(key: bytes, scope: str, raw: bytes) -> bytes:
    return hmac.new(key, scope.encode() + b"\0" + raw, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

"""What every door accepts: one range of times and one grammar of identifiers.

Every time a client or operator gives us (a reading's `t`, a device's `since`, a key's
expiry, the read API's `from`/`to`) is checked against the range here before it reaches
the database, and the registry's loader skips a stored row outside it. One range keeps the
ends of the calendar (year 1, year 9999, PostgreSQL's `±infinity`) out of every conversion
to milliseconds and every time-zone shift. Identifiers (patient, device, gateway, team and
key names) follow one grammar, so an id taken at one door can be used at every other: it
travels as a Kafka key, a database value and one URL path segment. Both are documented in
docs/wire-format.md.
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

# [EARLIEST, LATEST): no wearable measured before 1970, and 2200 is far beyond any key's
# expiry or scheduled move, yet far from year 9999, where a time-zone shift overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
EARLIEST_MS = 0
LATEST_MS = (LATEST - EARLIEST) // _MS
RANGE_TEXT = "1970-01-01T00:00:00Z (inclusive) to 2200-01-01T00:00:00Z (exclusive)"

MAX_ID_CHARS = 128  # ids become Kafka keys, database values and URL path segments


def time_problem(moment: datetime) -> str | None:
    """Why `moment` (timezone-aware) is not an accepted time, or None when it is."""
    if moment.tzinfo is None:
        return "needs a UTC offset (Z or +hh:mm)"
    # Aware comparisons subtract offsets as timedeltas: no overflow at the calendar's ends.
    if not EARLIEST <= moment < LATEST:
        return f"must be from {RANGE_TEXT}"
    return None


def ms_problem(t_ms: int) -> str | None:
    """time_problem for milliseconds since the epoch."""
    if not EARLIEST_MS <= t_ms < LATEST_MS:
        return f"must be from {RANGE_TEXT}"
    return None


def epoch_ms(moment: datetime) -> int:
    """Exact milliseconds since the epoch (timedelta arithmetic; a float could round)."""
    return (moment - EARLIEST) // _MS


# Control, format (zero-width, bidi overrides), surrogate, private-use and unassigned
# characters, and line/paragraph separators: invisible or reordering characters let two
# identifiers that look the same name different patients, and NUL is refused by PostgreSQL.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# An id is one path segment of the read and admin APIs: a "/" (even sent as %2F, which
# the server decodes) would split it, and clients collapse "." and ".." segments.
_NOT_A_SEGMENT = frozenset({".", ".."})


def identifier_problem(value: Any) -> str | None:
    """Why `value` is not a usable identifier, or None when it is."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        return f"must be a non-empty string of at most {MAX_ID_CHARS} characters"
    return _text_problem(value)


# A gateway uploads for the same few devices and patients again and again: remember the
# verdicts on recent ids instead of classifying every character of them on every upload.
@functools.lru_cache(maxsize=65_536)
def _text_problem(value: str) -> str | None:
    if value != value.strip():
        return "must not start or end with whitespace"
    if any(unicodedata.category(c) in _HIDDEN for c in value):
        return "must not contain control, invisible or unassigned characters"
    if not unicodedata.is_normalized("NFC", value):
        # Two spellings of one visible name would be two patients.
        return "must be in Unicode normal form NFC"
    if "/" in value or value in _NOT_A_SEGMENT:
        return 'must not contain "/" nor be "." or ".."'
    return None

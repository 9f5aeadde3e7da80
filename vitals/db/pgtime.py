"""Contract times (integer milliseconds since the epoch, UTC) to and from timestamptz."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vitals.errors import ContractError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """Exact (integer arithmetic, no float rounding); ContractError outside year 1-9999."""
    try:
        return EPOCH + ms * _MS
    except OverflowError as exc:
        raise ContractError(f"time {ms} ms is out of range") from exc


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // _MS

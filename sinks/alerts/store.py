"""The alerts table: store detections once, find the unpublished, mark them published."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from vitals.contract import Detection
from vitals.db.alert_issues import detection_of
from vitals.db.pgtime import from_ms
from vitals.errors import ContractError

# (alert_id, state, patient_id, rule, severity, retrospective, episode_start, at,
#  detected_at, metric, value, device_id, detail, suppressed): STORE's column order.
AlertRow = tuple[
    uuid.UUID,
    str,
    str,
    str,
    str,
    bool,
    datetime,
    datetime,
    datetime,
    str | None,
    float | None,
    str | None,
    str,
    bool,
]
# (alert_id, state, episode_start): one row, one publication; the table's key (0006). The
# alert id already determines the episode start; it is in the key because alerts is a
# hypertable on it, and in every lookup so that only the chunks it falls in are searched.
Key = tuple[uuid.UUID, str, datetime]

STORE = """
INSERT INTO alerts (alert_id, state, patient_id, rule, severity, retrospective,
                    episode_start, at, detected_at, metric, value, device_id, detail,
                    suppressed)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::boolean[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                     $10::text[], $11::float8[], $12::text[], $13::text[], $14::boolean[])
ON CONFLICT (alert_id, state, episode_start) DO NOTHING
"""

# $1-$3 the keys' columns, [$4, $5] the range of their episode starts: TimescaleDB skips
# the chunks outside it (old, compressed ones have no index on alert_id).
# Opened before resolved, earlier before later: subscribers see an episode in order
# (all of a patient's alerts share a partition). Suppressed repeats are never published.
UNPUBLISHED = """
SELECT a.* FROM alerts a
JOIN unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS k(alert_id, state, episode_start)
     USING (alert_id, state, episode_start)
WHERE a.published_at IS NULL AND NOT a.suppressed
  AND a.episode_start >= $4 AND a.episode_start <= $5
ORDER BY a.at, a.state = 'resolved', a.detected_at
"""

MARK = """
UPDATE alerts a SET published_at = $6
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS k(alert_id, state, episode_start)
WHERE a.alert_id = k.alert_id AND a.state = k.state AND a.episode_start = k.episode_start
  AND a.episode_start >= $4 AND a.episode_start <= $5 AND a.published_at IS NULL
"""


def row_of(detection: Detection) -> AlertRow:
    """ContractError when the detection cannot be stored or published as it is."""
    try:
        alert_id = uuid.UUID(detection.alert_id)
    except ValueError as exc:
        raise ContractError(f"alert_id is not a UUID: {exc}") from exc
    _check_optional_fields(detection)
    return (
        alert_id,
        detection.state,
        detection.patient_id,
        detection.rule,
        detection.severity,
        detection.retrospective,
        from_ms(detection.episode_start),
        from_ms(detection.at),
        from_ms(detection.detected),
        detection.metric,
        detection.value,
        detection.device_id,
        detection.detail,
        detection.suppressed,
    )


def _check_optional_fields(detection: Detection) -> None:
    # decode_detection checks the identifying fields; these would otherwise reach the
    # database (or, worse, the public document) with the wrong type.
    for flag in ("retrospective", "suppressed"):
        if not isinstance(getattr(detection, flag), bool):
            raise ContractError(f"{flag} must be true or false")
    for name in ("metric", "device_id"):
        if not isinstance(getattr(detection, name), str | None):
            raise ContractError(f"{name} must be a string or null")
    if not isinstance(detection.detail, str):
        raise ContractError("detail must be a string")
    value = detection.value
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ContractError("value must be a number or null")


def key_of(detection: Detection) -> Key:
    return uuid.UUID(detection.alert_id), detection.state, from_ms(detection.episode_start)


def keys_of(rows: Iterable[AlertRow]) -> list[Key]:
    """Distinct keys, first-seen order."""
    return list(dict.fromkeys((row[0], row[1], row[6]) for row in rows))


async def store(conn: asyncpg.Connection, rows: Sequence[AlertRow]) -> int:
    """Insert what is not stored yet; returns how many rows were new."""
    if not rows:
        return 0
    status = await conn.execute(STORE, *(list(column) for column in zip(*rows, strict=True)))
    return int(status.rsplit(" ", 1)[1])


async def unpublished(conn: asyncpg.Connection, keys: Sequence[Key]) -> list[Detection]:
    """The stored detections among `keys` whose publication was never acknowledged."""
    if not keys:
        return []
    found = await conn.fetch(UNPUBLISHED, *key_params(keys))
    return [detection_of(record) for record in found]


async def mark_published(conn: asyncpg.Connection, keys: Sequence[Key], at: datetime) -> int:
    if not keys:
        return 0
    status = await conn.execute(MARK, *key_params(keys), at)
    return int(status.rsplit(" ", 1)[1])


def key_params(keys: Sequence[Key]) -> tuple[Any, ...]:
    """$1-$5 of UNPUBLISHED and MARK: the keys' columns, then their episode starts' range."""
    starts = [k[2] for k in keys]
    return [k[0] for k in keys], [k[1] for k in keys], starts, min(starts), max(starts)

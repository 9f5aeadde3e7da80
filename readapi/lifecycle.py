"""Acknowledging an alert and recording its outcome, and the open alerts of a reader.

The read API's sessions are read-only; an action's transaction alone is made read-write
(as the read audit's), and the API's role may only insert into `alert_lifecycle` (0014).
The table's key (alert_id, state, level) makes "twice" impossible: a second
acknowledgement or outcome inserts nothing and is refused with the first one's author and
time. The alerts sink publishes each row on vitals.alerts (sinks/alerts/escalation.py).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from frontdoor.errors import AlertConflict, Malformed
from vitals import contract
from vitals.db import locks

NOTE_MAX = 2000  # characters; the table's check says the same
# Open alerts: episodes that started this recently (a device silent for weeks is a
# matter for the device registry, not the board).
OPEN_LOOKBACK = timedelta(days=7)
OPEN_MAX = 500


# The opened alert an action is about; no episode start is known, so every chunk's key
# index is probed (one row).
_ALERT = """
SELECT o.patient_id, o.episode_start,
       EXISTS (SELECT 1 FROM alerts r WHERE r.alert_id = o.alert_id AND r.state = 'resolved'
                 AND r.episode_start = o.episode_start) AS resolved
FROM alerts o WHERE o.alert_id = $1 AND o.state = 'opened'
"""

_INSERT = """
INSERT INTO alert_lifecycle (alert_id, state, level, patient_id, episode_start, at,
                             actor_key_id, actor, outcome, note)
VALUES ($1, $2, 0, $3, $4, now(), $5, $6, $7, $8)
ON CONFLICT (alert_id, state, level) DO NOTHING
RETURNING at
"""

_EXISTING = """
SELECT at, actor FROM alert_lifecycle WHERE alert_id = $1 AND state = $2 AND level = 0
"""

# $1 patients (NULL: every patient), $2 oldest episode start, $3 rows. Open: opened and
# paged, neither resolved nor given an outcome. Oldest first.
OPEN = """
SELECT o.alert_id, o.patient_id, o.rule, o.severity, o.episode_start, o.at, o.published_at,
       o.metric, o.value, o.device_id, o.detail,
       coalesce((SELECT max(e.level) FROM alert_lifecycle e
                  WHERE e.alert_id = o.alert_id AND e.state = 'escalated'), 0)
         AS escalation_level,
       a.at AS acknowledged_at, a.actor AS acknowledged_by
FROM alerts o
LEFT JOIN alert_lifecycle a ON a.alert_id = o.alert_id AND a.state = 'acknowledged'
                           AND a.level = 0
WHERE o.state = 'opened' AND NOT o.suppressed AND NOT o.retrospective
  AND o.episode_start >= $2 AND ($1::text[] IS NULL OR o.patient_id = ANY($1))
  AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.alert_id = o.alert_id
                    AND r.state = 'resolved' AND r.episode_start = o.episode_start)
  AND NOT EXISTS (SELECT 1 FROM alert_lifecycle x WHERE x.alert_id = o.alert_id
                    AND x.state = 'outcome')
ORDER BY o.at, o.alert_id
LIMIT $3
"""


def alert_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Malformed("bad_alert_id", "the alert id is not a UUID") from None


def outcome_body(body: bytes) -> tuple[str, str | None]:
    """(outcome, note) of `{"outcome": ..., "note": ...}`; Malformed otherwise. The note is
    never echoed in an error: it may hold anything a nurse typed."""
    doc = _json_object(body, ("outcome", "note"))
    outcome = doc.get("outcome")
    if outcome not in contract.OUTCOMES:
        raise Malformed("bad_outcome", f"outcome must be one of {', '.join(contract.OUTCOMES)}")
    note = doc.get("note")
    if note is not None and not isinstance(note, str):
        raise Malformed("bad_note", "note must be a string")
    if note is not None and len(note) > NOTE_MAX:
        raise Malformed("bad_note", f"note is longer than {NOTE_MAX} characters")
    if note is not None and "\x00" in note:
        raise Malformed("bad_note", "note holds a NUL character")
    return outcome, (note.strip() or None) if note is not None else None


def empty_body(body: bytes) -> None:
    """Acknowledge takes no body, or an empty JSON object."""
    if body.strip():
        _json_object(body, ())


async def alert(conn: asyncpg.Connection, alert: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_ALERT, alert)


async def record(
    conn: asyncpg.Connection,
    alert: uuid.UUID,
    found: asyncpg.Record,
    state: str,
    *,
    key_id: str,
    actor: str,
    outcome: str | None = None,
    note: str | None = None,
) -> datetime:
    """Insert the human state; AlertConflict when it was recorded before."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION READ WRITE")
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", locks.LIFECYCLE)
        at = await conn.fetchval(
            _INSERT, alert, state, found["patient_id"], found["episode_start"],
            key_id, actor, outcome, note,
        )  # fmt: skip
        if at is not None:
            return at
        first = await conn.fetchrow(_EXISTING, alert, state)
    by = f"by {first['actor']} at {first['at'].isoformat()}; nothing changed"
    if state == "acknowledged":
        raise AlertConflict("already_acknowledged", f"this alert was acknowledged {by}")
    raise AlertConflict("outcome_already_recorded", f"this alert was given an outcome {by}")


def _json_object(body: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    try:
        doc = json.loads(body, object_pairs_hook=_unique, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Malformed("malformed_json", "the body is not a JSON object") from None
    if not isinstance(doc, dict):
        raise Malformed("malformed_json", "the body is not a JSON object")
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        names = ", ".join(name[:40] for name in unknown)
        raise Malformed("unknown_field", f"unknown field(s): {names}; allowed: {allowed}")
    return doc


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(name)

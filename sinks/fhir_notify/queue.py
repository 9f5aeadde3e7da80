"""The notifications owed to FHIR subscribers (fhir_notifications, migration 0017): queue
one per matching subscription for each alert state change, claim the due ones, record
each attempt's outcome. Every statement is idempotent or leased, so two notifiers, or one
restarted mid-delivery, neither lose a notification nor corrupt its record."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

# May the subscription's key read patient $P now (fhir_key_may_read, migration 0017).
_IN_SCOPE = "fhir_key_may_read(s.key_id, {patient})"

# $1 alert id, $2 state, $3 level, $4 patient, $5 when vitals.alerts carried it. Every
# active subscription registered by then whose filter and scope take the patient gets
# one row, numbered by its subscription's counter; a redelivered alert queues nothing.
_QUEUE = f"""
WITH matched AS (
    SELECT s.subscription_id FROM fhir_subscriptions s
    WHERE s.status = 'active' AND s.created_at <= $5
      AND (s.patient_id IS NULL OR s.patient_id = $4)
      AND NOT EXISTS (SELECT 1 FROM fhir_notifications n
                       WHERE n.subscription_id = s.subscription_id AND n.alert_id = $1
                         AND n.state = $2 AND n.level = $3)
      AND {_IN_SCOPE.format(patient="$4")}
), numbered AS (
    UPDATE fhir_subscriptions s SET events = s.events + 1
    FROM matched m WHERE s.subscription_id = m.subscription_id
    RETURNING s.subscription_id, s.events
)
INSERT INTO fhir_notifications (subscription_id, alert_id, state, level, event_number,
                                patient_id, event_at)
SELECT subscription_id, $1, $2, $3, events, $4, $5 FROM numbered
ON CONFLICT DO NOTHING
"""

# Up to $1 due notifications, leased for $2: another notifier skips them, and one that
# dies mid-delivery leaves them to be retried when the lease ends.
_CLAIM = f"""
WITH due AS (
    SELECT subscription_id, alert_id, state, level FROM fhir_notifications
    WHERE delivered_at IS NULL AND dead_at IS NULL AND withdrawn_at IS NULL
      AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE fhir_notifications n
SET next_attempt_at = now() + $2::interval, attempts = n.attempts + 1
FROM due, fhir_subscriptions s
WHERE (n.subscription_id, n.alert_id, n.state, n.level)
      = (due.subscription_id, due.alert_id, due.state, due.level)
  AND s.subscription_id = n.subscription_id
RETURNING n.subscription_id, n.alert_id, n.state, n.level, n.event_number, n.event_at,
          n.queued_at, n.attempts, s.endpoint, s.content, s.headers, s.patient_id AS filter,
          s.reason, s.status, s.events,
          s.status = 'active' AND {_IN_SCOPE.format(patient="n.patient_id")} AS allowed
"""

_KEY = "subscription_id = $1 AND alert_id = $2 AND state = $3 AND level = $4"
_DELIVERED = f"UPDATE fhir_notifications SET delivered_at = now(), last_error = NULL WHERE {_KEY}"
_WITHDRAWN = f"UPDATE fhir_notifications SET withdrawn_at = now() WHERE {_KEY}"
# Dead once it has failed for longer than the bound since it was queued ($6); else again
# after $5.
_FAILED = f"""
UPDATE fhir_notifications
SET last_error = left($7, 500),
    dead_at = CASE WHEN now() - queued_at >= $6::interval THEN now() END,
    next_attempt_at = now() + $5::interval
WHERE {_KEY}
RETURNING dead_at IS NOT NULL AS dead
"""


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed notification with its subscription."""

    subscription_id: uuid.UUID
    alert_id: uuid.UUID
    state: str
    level: int
    event_number: int
    event_at: datetime
    attempts: int
    endpoint: str
    content: str
    headers: tuple[str, ...]
    filter: str | None
    reason: str
    events: int
    allowed: bool  # active, and the patient still in the key's scope

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID, str, int]:
        return self.subscription_id, self.alert_id, self.state, self.level


async def queue(
    conn: asyncpg.Connection, alert_id: uuid.UUID, state: str, level: int, patient: str,
    at: datetime,
) -> int:  # fmt: skip
    """Queue the change for every matching subscription; returns how many were queued."""
    status = await conn.execute(_QUEUE, alert_id, state, level, patient, at)
    return int(status.rsplit(" ", 1)[1])


async def claim(conn: asyncpg.Connection, rows: int, lease: timedelta) -> list[Due]:
    found = await conn.fetch(_CLAIM, rows, lease)
    return [
        Due(
            subscription_id=r["subscription_id"],
            alert_id=r["alert_id"],
            state=r["state"],
            level=r["level"],
            event_number=r["event_number"],
            event_at=r["event_at"],
            attempts=r["attempts"],
            endpoint=r["endpoint"],
            content=r["content"],
            headers=tuple(r["headers"]),
            filter=r["filter"],
            reason=r["reason"],
            events=r["events"],
            allowed=r["allowed"],
        )  # fmt: skip
        for r in found
    ]


async def delivered(conn: asyncpg.Connection, due: Due) -> None:
    await conn.execute(_DELIVERED, *due.key)


async def withdrawn(conn: asyncpg.Connection, due: Due) -> None:
    await conn.execute(_WITHDRAWN, *due.key)


async def failed(
    conn: asyncpg.Connection, due: Due, error: str, retry_in: timedelta, dead_after: timedelta
) -> bool:
    """Record a failed attempt; True when it is now a dead letter."""
    return bool(await conn.fetchval(_FAILED, *due.key, retry_in, dead_after, error))

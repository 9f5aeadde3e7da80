"""The human states of alerts in `alert_lifecycle` (0014): decide escalations, find what is
not yet published, mark it published. SQL and row shaping only; escalation.py runs them.

Escalation is one statement over the stored state, not a timer in memory: an opened,
paged alert of a severity with delays, neither resolved, acknowledged nor given an
outcome, published longer ago than a level's delay, gets that level's row. The table's key
(alert_id, state, level) makes the decision idempotent, so a process that dies before or
after it, or two that run it at once, neither lose nor double an escalation.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
import orjson

from sinks.alerts.store import detection_of
from vitals import contract
from vitals.db import locks
from vitals.db.pgtime import to_ms
from vitals.rules_file import Escalation

# Only episodes that started this recently are looked at: an alert escalates within hours,
# and the older chunks of `alerts` (compressed on TimescaleDB) stay unread.
LOOKBACK = timedelta(days=2)

# $1 cohorts, $2 severities, $3 levels, $4 delays (s) (one entry per cohort, severity and
# level; cohort '' for patients in none), $5 now, $6 oldest episode start, $7 patients
# with a cohort, $8 their cohorts (vitals/rules_file.py: Escalation).
_ESCALATE = """
INSERT INTO alert_lifecycle (alert_id, state, level, patient_id, episode_start, at)
SELECT o.alert_id, 'escalated', d.level, o.patient_id, o.episode_start, $5
FROM alerts o
LEFT JOIN unnest($7::text[], $8::text[]) AS pc(patient_id, cohort)
     ON pc.patient_id = o.patient_id
JOIN unnest($1::text[], $2::text[], $3::int[], $4::float8[])
       AS d(cohort, severity, level, after_s)
     ON d.severity = o.severity AND d.cohort = coalesce(pc.cohort, '')
WHERE o.state = 'opened' AND NOT o.suppressed AND NOT o.retrospective
  AND o.episode_start >= $6
  AND o.published_at IS NOT NULL AND o.published_at + make_interval(secs => d.after_s) <= $5
  AND NOT EXISTS (SELECT 1 FROM alerts r
                  WHERE r.alert_id = o.alert_id AND r.state = 'resolved'
                    AND r.episode_start = o.episode_start)
  AND NOT EXISTS (SELECT 1 FROM alert_lifecycle h
                  WHERE h.alert_id = o.alert_id
                    AND (h.state IN ('acknowledged', 'outcome')
                         OR (h.state = 'escalated' AND h.level >= d.level)))
ON CONFLICT (alert_id, state, level) DO NOTHING
RETURNING alert_id, level
"""

# Published after their opened alert (same key, same partition: in order), never for a
# suppressed repeat (its opened alert was never published either).
_UNPUBLISHED = """
SELECT h.state AS change_state, h.level, h.at AS change_at, h.actor, h.outcome, o.*
FROM alert_lifecycle h
JOIN alerts o ON o.alert_id = h.alert_id AND o.state = 'opened'
             AND o.episode_start = h.episode_start
WHERE h.published_at IS NULL AND o.published_at IS NOT NULL AND NOT o.suppressed
ORDER BY h.at, h.level
LIMIT $1
"""

_OLDEST_UNPUBLISHED = "SELECT min(at) FROM alert_lifecycle WHERE published_at IS NULL"

_MARK = """
UPDATE alert_lifecycle h SET published_at = $4
FROM unnest($1::uuid[], $2::text[], $3::int[]) AS k(alert_id, state, level)
WHERE h.alert_id = k.alert_id AND h.state = k.state AND h.level = k.level
  AND h.published_at IS NULL
"""

# (alert_id, state, level): one row, one publication.
Key = tuple[uuid.UUID, str, int]


async def escalate(conn: asyncpg.Connection, escalation: Escalation, now: datetime) -> list[Key]:
    """Record the escalations due at `now`; the keys of the new ones."""
    plan = escalation.plan()
    if not plan:
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.LIFECYCLE)
        rows = await conn.fetch(
            _ESCALATE,
            *(list(column) for column in zip(*plan, strict=True)),
            now,
            now - LOOKBACK,
            list(escalation.patients),
            list(escalation.patients.values()),
        )
    return [(r["alert_id"], "escalated", r["level"]) for r in rows]


Pending = tuple[Key, contract.Detection, contract.LifecycleChange]


async def unpublished(conn: asyncpg.Connection, limit: int = 500) -> list[Pending]:
    """The rows to publish: each with its opened alert (the document's other fields)."""
    found = []
    for r in await conn.fetch(_UNPUBLISHED, limit):
        change = contract.LifecycleChange(
            r["change_state"], r["level"], to_ms(r["change_at"]), r["actor"], r["outcome"]
        )
        found.append(((r["alert_id"], change.state, change.level), detection_of(r), change))
    return found


async def oldest_unpublished(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval(_OLDEST_UNPUBLISHED)


async def mark_published(conn: asyncpg.Connection, keys: Sequence[Key], at: datetime) -> int:
    if not keys:
        return 0
    columns = ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    status = await conn.execute(_MARK, *columns, at)
    return int(status.rsplit(" ", 1)[1])


def key_of_document(raw: bytes | None) -> tuple[Key, datetime] | None:
    """(key, published_at) of a v2 document on vitals.alerts; None for anything else."""
    try:
        doc = orjson.loads(raw or b"")
        if doc["schema"] != contract.ALERT_SCHEMA_V2:
            return None
        key = (uuid.UUID(doc["alert_id"]), doc["state"], int(doc["escalation_level"]))
        return key, datetime.fromisoformat(doc["published_at"])
    except (ValueError, KeyError, TypeError):
        return None

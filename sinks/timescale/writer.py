"""Bulk, idempotent writes of readings: a COPY straight into readings while batches bring
nothing already stored, COPY into a staging table then INSERT ... ON CONFLICT when one does.

COPY is the fast path into PostgreSQL but fails on the first duplicate key; a plain
INSERT handles duplicates but is slower. COPY into an unconstrained temporary table, then
one INSERT ... SELECT ... ON CONFLICT DO NOTHING into readings, gets both: redelivered
uploads and retried gateway requests cost nothing and are stored once. The first write of
a key wins.

That staging path costs ~40 % against a plain COPY into readings (docs/benchmarks.md): the
rows are written twice, and ON CONFLICT inserts them one at a time with a speculative
insertion each (three WAL records per row where COPY batches a page), which dominates.
Duplicates are rare in steady state (the gateway answers a retried Idempotency-Key from
its cache; Kafka redelivers only after a crash or a rebalance), so ReadingsWriter tries a
plain COPY first: a duplicate key aborts it whole (nothing of it is stored), and the same
batch goes through the staging path. Either way each key is stored once.

A key that comes again with another value is a conflict (docs/wire-format.md): the first
value stays in readings, and the later one is recorded in reading_conflicts (one row per
distinct conflicting value, so a redelivered conflict is recorded once). Only the staging
path can meet one: the plain COPY succeeds only when every key is new and unique.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from sinks.timescale.rows import COLUMNS, Row

STAGING = "readings_staging"
_COLUMN_LIST = ", ".join(COLUMNS)

# Per session and kept: pooled connections reuse it, and ON COMMIT DELETE ROWS empties it
# at every commit (a cheap truncate) rather than creating and dropping a table per batch,
# which would churn the system catalogs at the sink's batch rate.
CREATE_STAGING = f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (LIKE readings) ON COMMIT DELETE ROWS"
UPSERT = (
    f"INSERT INTO readings ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGING} "
    "ON CONFLICT (patient_id, metric, t, device_id) DO NOTHING"
)


# The stored value is looked up by a scalar subquery, one primary-key probe per staged row
# like ON CONFLICT's own: a join could be planned as a scan of all of readings, since the
# staging table has no statistics. A staged row that was just inserted finds itself (equal).
RECORD_CONFLICTS = f"""
INSERT INTO reading_conflicts (patient_id, metric, t, device_id, stored_value,
                               conflicting_value, unit, upload_id, received_at)
SELECT patient_id, metric, t, device_id, stored, value, unit, upload_id, received_at
FROM (SELECT s.*, (SELECT r.value FROM readings r
                   WHERE r.patient_id = s.patient_id AND r.metric = s.metric
                     AND r.t = s.t AND r.device_id = s.device_id) AS stored
      FROM {STAGING} s) staged
WHERE stored <> value
ON CONFLICT DO NOTHING
RETURNING metric"""


class Written(NamedTuple):
    new: int  # rows stored in readings
    conflicts: tuple[str, ...]  # the metric of each conflict recorded for the first time


NOTHING = Written(0, ())


def first_of_each_key(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """The first row of each (patient, metric, t, device) in arrival order, and the later
    rows whose value differs from that first one (each value once); exact repeats dropped.

    Within a batch "first" is decided here rather than by the order an INSERT ... SELECT
    happens to read the staging table in, which SQL does not promise."""
    firsts: dict[tuple[object, ...], Row] = {}
    later: dict[tuple[object, ...], Row] = {}
    for row in rows:
        key = row[:4]
        first = firsts.setdefault(key, row)
        if first[4] != row[4]:
            later.setdefault((*key, row[4]), row)
    return list(firsts.values()), list(later.values())


async def copy_then_upsert(conn: asyncpg.Connection, rows: Sequence[Row]) -> Written:
    """Write `rows` in one transaction: the new ones into readings, the conflicting ones
    into reading_conflicts."""
    if not rows:
        return NOTHING
    firsts, later = first_of_each_key(rows)
    async with conn.transaction():
        await conn.execute(CREATE_STAGING)
        await conn.copy_records_to_table(STAGING, records=firsts, columns=COLUMNS)
        status = await conn.execute(UPSERT)
        # The command tag is "INSERT 0 <rows inserted>".
        new = int(status.rsplit(" ", 1)[1])
        if new == len(firsts) and not later:
            return Written(new, ())  # every key new and given once: nothing to compare
        if later:  # compared with the value of record like the rest
            await conn.copy_records_to_table(STAGING, records=later, columns=COLUMNS)
        recorded = await conn.fetch(RECORD_CONFLICTS)
    return Written(new, tuple(r["metric"] for r in recorded))


async def copy_if_all_new(conn: asyncpg.Connection, rows: Sequence[Row]) -> bool:
    """COPY `rows` straight into readings in one transaction: True if stored, False (and
    nothing stored) if any key is already stored or repeated within `rows`."""
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("readings", records=rows, columns=COLUMNS)
    except asyncpg.UniqueViolationError:
        return False
    return True


class ReadingsWriter:
    """One sink's writes: the plain COPY while batches are all new, the staging path from a
    batch with a duplicate until a batch comes through it without one. So a redelivered
    stretch of the topic costs one aborted COPY, not one per batch."""

    def __init__(self) -> None:
        self.careful = False  # the last batch held duplicates: more are likely

    async def write(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> Written:
        """Write `rows` once each: how many were new, and the conflicts recorded."""
        if not rows:
            return NOTHING
        if not self.careful and await copy_if_all_new(conn, rows):
            return Written(len(rows), ())
        written = await copy_then_upsert(conn, rows)
        self.careful = written.new < len(rows)
        return written

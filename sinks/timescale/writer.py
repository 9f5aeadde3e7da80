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
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from sinks.timescale.rows import COLUMNS, Row

STAGING = "readings_staging"
_COLUMN_LIST = ", ".join(COLUMNS)

# Per session and kept: pooled connections reuse it, and ON COMMIT DELETE ROWS empties it
# at every commit (a cheap truncate) rather than creating and dropping a table per batch,
# which would churn the system catalogs at the sink's batch rate.
_CREATE_STAGING = f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (LIKE readings) ON COMMIT DELETE ROWS"
_UPSERT = (
    f"INSERT INTO readings ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGING} "
    "ON CONFLICT (patient_id, metric, t, device_id) DO NOTHING"
)


async def copy_then_upsert(conn: asyncpg.Connection, rows: Sequence[Row]) -> int:
    """Write `rows` in one transaction; returns how many were new (not already stored)."""
    if not rows:
        return 0
    async with conn.transaction():
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table(STAGING, records=rows, columns=COLUMNS)
        status = await conn.execute(_UPSERT)
    # The command tag is "INSERT 0 <rows inserted>".
    return int(status.rsplit(" ", 1)[1])


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

    async def write(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> int:
        """Write `rows` once each; returns how many were new (not already stored)."""
        if not rows:
            return 0
        if not self.careful and await copy_if_all_new(conn, rows):
            return len(rows)
        new = await copy_then_upsert(conn, rows)
        self.careful = new < len(rows)
        return new

"""Bulk, idempotent writes of readings: COPY into a staging table, then INSERT ... ON CONFLICT.

COPY is the fast path into PostgreSQL but fails on the first duplicate key; a plain
INSERT handles duplicates but is slower. COPY into an unconstrained temporary table, then
one INSERT ... SELECT ... ON CONFLICT DO NOTHING into readings, gets both: redelivered
uploads and retried gateway requests cost nothing and are stored once. The first write of
a key wins.
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

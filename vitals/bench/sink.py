"""Sink scenario: rows/s into PostgreSQL through the project's writer (COPY → staging →
INSERT … ON CONFLICT DO NOTHING) against a raw COPY of the same rows into the same table,
same batches, same connection. The table is emptied before each run."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from sinks.timescale.rows import COLUMNS, Row, rows_of
from sinks.timescale.writer import copy_then_upsert
from vitals import contract
from vitals.bench import data
from vitals.bench.infra import Infra
from vitals.bench.report import Row as ResultRow
from vitals.bench.stats import Summary, Target


async def _project(conn: asyncpg.Connection, batches: list[list[Row]]) -> int:
    written = 0
    for batch in batches:
        written += await copy_then_upsert(conn, batch)
    return written


async def _raw_copy(conn: asyncpg.Connection, batches: list[list[Row]]) -> int:
    written = 0
    for batch in batches:
        await conn.copy_records_to_table("readings", records=batch, columns=COLUMNS)
        written += len(batch)
    return written


async def measure(database_url: str, rows: int, batch: int, reps: int) -> dict[str, list[float]]:
    uploads = data.fleet_uploads(rows // data.READINGS_PER_UPLOAD, 500, contract.now_ms())
    all_rows = [row for upload in uploads for row in rows_of(upload)]
    batches = [all_rows[i : i + batch] for i in range(0, len(all_rows), batch)]
    sides = {"project": _project, "raw COPY": _raw_copy}
    out: dict[str, list[float]] = {name: [] for name in sides}
    conn = await asyncpg.connect(database_url)
    try:
        for rep in range(reps):
            order = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for name in order:
                await conn.execute("TRUNCATE readings")
                await conn.execute("CHECKPOINT")  # neither side pays for the other's writes
                started = time.perf_counter()
                written = await sides[name](conn, batches)
                elapsed = time.perf_counter() - started
                if written != len(all_rows):
                    raise AssertionError(f"{name} wrote {written} of {len(all_rows)} rows")
                out[name].append(written / elapsed)
        await conn.execute("TRUNCATE readings")
    finally:
        await conn.close()
    return out


def run(infra: Infra, rows: int, batch: int, reps: int) -> list[ResultRow]:
    out = asyncio.run(measure(infra.database_url, rows, batch, reps))
    return [
        ResultRow(
            "sink",
            "rows/s into readings",
            "rows/s",
            Summary(tuple(out["project"])),
            Summary(tuple(out["raw COPY"])),
            "raw COPY",
            Target("ratio_at_least", 0.7),
            f"{rows:,} rows in batches of {batch}; project deduplicates, raw COPY cannot",
        )
    ]

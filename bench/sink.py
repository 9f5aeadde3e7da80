"""Sink scenario: rows/s into PostgreSQL through the project's writer (ReadingsWriter: a
plain COPY while batches are all new, COPY → staging → INSERT … ON CONFLICT DO NOTHING from a
batch with a duplicate) against a raw COPY of the same rows into the same table, same
batches, same connection; and the writer again when every batch holds a duplicate (its
slow path throughout). The table is emptied before each run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench import data
from bench.infra import Infra
from bench.report import Row as ResultRow
from bench.stats import Summary, Target
from sinks.timescale.rows import COLUMNS, Row, rows_of
from sinks.timescale.writer import ReadingsWriter
from vitals import contract

Side = Callable[[asyncpg.Connection, list[list[Row]]], Awaitable[int]]


async def project(conn: asyncpg.Connection, batches: list[list[Row]]) -> int:
    """The sink's writer as the sink runs it (one per sink); returns the new rows."""
    writer = ReadingsWriter()
    written = 0
    for batch in batches:
        written += (await writer.write(conn, batch)).new
    return written


async def raw_copy(conn: asyncpg.Connection, batches: list[list[Row]]) -> int:
    written = 0
    for batch in batches:
        await conn.copy_records_to_table("readings", records=batch, columns=COLUMNS)
        written += len(batch)
    return written


def redelivered(batches: list[list[Row]]) -> list[list[Row]]:
    """Each batch after the first also carries the first upload of the batch before it
    again, as a redelivery or a retried upload would."""
    return [batches[0]] + [
        batch + before[: data.READINGS_PER_UPLOAD]
        for before, batch in zip(batches, batches[1:], strict=False)
    ]


async def measure(database_url: str, rows: int, batch: int, reps: int) -> dict[str, list[float]]:
    uploads = data.fleet_uploads(rows // data.READINGS_PER_UPLOAD, 500, contract.now_ms())
    all_rows = [row for upload in uploads for row in rows_of(upload)]
    batches = [all_rows[i : i + batch] for i in range(0, len(all_rows), batch)]
    # name: (write, its batches); each stores exactly the rows of all_rows.
    sides: dict[str, tuple[Side, list[list[Row]]]] = {
        "project": (project, batches),
        "raw COPY": (raw_copy, batches),
        "project, duplicates": (project, redelivered(batches)),
    }
    out: dict[str, list[float]] = {name: [] for name in sides}
    conn = await asyncpg.connect(database_url)
    try:
        for rep in range(reps):
            names = list(sides)
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                write, side_batches = sides[name]
                await conn.execute("TRUNCATE readings")
                await conn.execute("CHECKPOINT")  # neither side pays for the other's writes
                started = time.perf_counter()
                written = await write(conn, side_batches)
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
    raw = Summary(tuple(out["raw COPY"]))
    share = data.READINGS_PER_UPLOAD / (batch + data.READINGS_PER_UPLOAD)
    return [
        ResultRow(
            "sink",
            "rows/s into readings",
            "rows/s",
            Summary(tuple(out["project"])),
            raw,
            "raw COPY",
            Target("ratio_at_least", 0.7),
            f"{rows:,} rows in batches of {batch}; project deduplicates, raw COPY cannot",
        ),
        ResultRow(
            "sink",
            "rows/s stored, a duplicate in every batch",
            "rows/s",
            Summary(tuple(out["project, duplicates"])),
            raw,
            "raw COPY",
            note=f"every batch repeats an upload of the batch before ({share:.1%} of the rows "
            "written are duplicates): the writer's staging path throughout, its worst case",
        ),
    ]

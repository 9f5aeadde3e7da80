"""Storage scenario (issue 4): N readings loaded through the sink's writer beside a raw COPY
of the same rows into the same database, in the same run, alternating; the table's size on
disk; and its size before and after compression where TimescaleDB runs.

On a server with TimescaleDB (the bench database then holds a hypertable) everything is
measured there. Without it, compression is measured on the TimescaleDB engine compiled to
WASM that the storage tests use (tests/support/timescale/engine.mjs, PGlite), on fewer rows: it
runs in memory, about 25k rows/s, so its throughput means nothing and is not reported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import asyncpg

from bench import data
from bench.infra import Infra
from bench.report import Row as ResultRow
from bench.stats import Summary, Target
from sinks.timescale import writer as sink_writer
from sinks.timescale.rows import COLUMNS, Row
from vitals import contract
from vitals.db.migrate import discover, plan

BATCH = 2_000  # rows per write, as in the sink scenario
WASM_ROWS_MAX = 500_000  # the WASM engine holds its database in memory
# Every (patient, metric) series gets 2,000 readings (33 minutes at 1 Hz): two full
# compressed batches of 1,000 rows (TimescaleDB's most), as a real series fills in a day.
ROWS_PER_PATIENT = 4_000
MAX_PATIENTS = 500
MB = 1024 * 1024
ENGINE_CLIENT = "tests/support/timescale/databases.py"

TIMESCALE_INSTALLED = "SELECT count(*) AS n FROM pg_extension WHERE extname = 'timescaledb'"
HYPERTABLE_READINGS = """
SELECT count(*) AS n FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"""
# Heap (with TOAST and the free-space and visibility maps) and indexes.
SIZES_PLAIN = """
SELECT pg_table_size('readings') AS table_bytes, pg_indexes_size('readings') AS index_bytes,
       pg_total_relation_size('readings') AS total_bytes"""
# A hypertable's own relation is empty; its chunks (and their compressed twins) hold it all.
SIZES_TIMESCALE = """
SELECT coalesce(table_bytes, 0) + coalesce(toast_bytes, 0) AS table_bytes,
       coalesce(index_bytes, 0) AS index_bytes, coalesce(total_bytes, 0) AS total_bytes
FROM hypertable_detailed_size('readings')"""
COMPRESS_ALL = """
SELECT count(compress_chunk(c, if_not_compressed => TRUE)) AS n FROM show_chunks('readings') c"""
# Stands in for the sink's COPY into its staging table on the WASM engine, which cannot
# serve COPY (as in tests/support/timescale/checks.py); the upsert is the sink's own statement.
FILL_STAGING = (
    f"INSERT INTO {sink_writer.STAGING} ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    "$1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::float8[], $6::text[], "
    "$7::uuid[], $8::timestamptz[])"
)


class Fetcher(Protocol):
    """asyncpg's connection, or the WASM engine's client: rows readable by column name."""

    async def fetch(self, sql: str, *params: Any) -> Any: ...


@dataclass(slots=True)
class Sizes:
    table: int
    indexes: int
    total: int


@dataclass(slots=True)
class Measured:
    rates: dict[str, list[float]] = field(default_factory=dict)
    loaded: Sizes | None = None
    engine: str = "PostgreSQL"
    compressed: tuple[str, int, Sizes, Sizes] | None = None  # engine, rows, before, after
    notes: list[str] = field(default_factory=list)


def patients_for(rows: int) -> int:
    return max(1, min(MAX_PATIENTS, rows // ROWS_PER_PATIENT))


async def sizes(db: Fetcher, timescale: bool) -> Sizes:
    row = (await db.fetch(SIZES_TIMESCALE if timescale else SIZES_PLAIN))[0]
    return Sizes(int(row["table_bytes"]), int(row["index_bytes"]), int(row["total_bytes"]))


async def compress(db: Fetcher) -> int:
    return int((await db.fetch(COMPRESS_ALL))[0]["n"])


async def _load(write: Callable[[list[Row]], Awaitable[int]], rows: int, end_ms: int) -> float:
    """Rows/s of `write` over the fleet's rows, counting the time spent in writes only
    (each batch is generated between writes, so N millions need one batch of memory)."""
    written, spent = 0, 0.0
    for batch in data.fleet_rows(rows, patients_for(rows), end_ms, batch=BATCH):
        started = time.perf_counter()
        written += await write(batch)
        spent += time.perf_counter() - started
    expected = rows // data.READINGS_PER_UPLOAD * data.READINGS_PER_UPLOAD
    if written != expected:
        raise AssertionError(f"wrote {written} of {expected} rows")
    return written / spent


async def measure(database_url: str, rows: int, reps: int, wasm_rows: int) -> Measured:
    out = Measured(rates={"project": [], "raw COPY": []})
    end_ms = contract.now_ms()
    conn = await asyncpg.connect(database_url)
    try:
        timescale = await _hypertable(conn)
        if timescale:
            out.engine = "TimescaleDB"
        for rep in range(reps):
            for name in ("project", "raw COPY") if rep % 2 == 0 else ("raw COPY", "project"):
                await conn.execute("TRUNCATE readings")
                await conn.execute("CHECKPOINT")  # neither side pays for the other's writes
                if name == "project":
                    # One writer per run, as one per sink.
                    write = partial(_stored, sink_writer.ReadingsWriter(), conn)
                    out.rates[name].append(await _load(write, rows, end_ms))
                    out.loaded = await sizes(conn, timescale)
                else:
                    out.rates[name].append(await _load(partial(_raw_copy, conn), rows, end_ms))
        if timescale:
            # The last run's rows (the same whichever side wrote them).
            before = await sizes(conn, True)
            await compress(conn)
            out.compressed = ("TimescaleDB", rows, before, await sizes(conn, True))
        await conn.execute("TRUNCATE readings")
    finally:
        await conn.close()
    if not timescale:
        await compress_on_wasm(out, min(rows, wasm_rows), end_ms)
    return out


async def _stored(
    writer: sink_writer.ReadingsWriter, conn: asyncpg.Connection, batch: list[Row]
) -> int:
    """The sink's writer, counting the rows it stored."""
    return (await writer.write(conn, batch)).new


async def _raw_copy(conn: asyncpg.Connection, batch: list[Row]) -> int:
    await conn.copy_records_to_table("readings", records=batch, columns=COLUMNS)
    return len(batch)


async def _hypertable(conn: asyncpg.Connection) -> bool:
    if not (await conn.fetch(TIMESCALE_INSTALLED))[0]["n"]:
        return False
    return bool((await conn.fetch(HYPERTABLE_READINGS))[0]["n"])


async def compress_on_wasm(out: Measured, rows: int, end_ms: int) -> None:
    """Sizes before and after compression on PGlite + TimescaleDB, migrated as the sink's
    server would be, loaded with the sink's staging statements."""
    engine = _engine_client()
    if engine is None:
        out.notes.append(f"compression not measured: no {ENGINE_CLIENT} (run from a checkout)")
        return
    problem = engine.engine_problem()
    if problem:
        out.notes.append(f"compression not measured: {problem}")
        return
    async with engine.Pglite.started() as db:
        await db.script("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for migration in plan(discover(), timescale=True):
            async with db.transaction():
                await db.script(migration.sql())

        async def upsert(batch: list[Row]) -> int:
            async with db.transaction():
                await db.script(sink_writer.CREATE_STAGING)
                await db.execute(FILL_STAGING, *(list(c) for c in zip(*batch, strict=True)))
                return await db.execute(sink_writer.UPSERT)

        await _load(upsert, rows, end_ms)
        before = await sizes(db, True)
        await compress(db)
        out.compressed = ("TimescaleDB 2.23 in WASM (PGlite)", rows, before, await sizes(db, True))


def _engine_client() -> ModuleType | None:
    """The storage tests' client of the WASM engine, loaded from its file: `tests` is not
    an installed package, and the engine (engine.mjs, its npm package) lives beside it."""
    path = Path(__file__).resolve().parents[1] / ENGINE_CLIENT
    spec = importlib.util.spec_from_file_location("vitals_bench_engine", path)
    if spec is None or spec.loader is None or not path.exists():
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(infra: Infra, rows: int, reps: int, notes: list[str]) -> list[ResultRow]:
    m = asyncio.run(measure(infra.database_url, rows, reps, WASM_ROWS_MAX))
    notes.extend(m.notes)
    patients = patients_for(rows)
    out = [
        ResultRow(
            "storage",
            f"rows/s loading {rows:,} readings",
            "rows/s",
            Summary(tuple(m.rates["project"])),
            Summary(tuple(m.rates["raw COPY"])),
            "raw COPY",
            Target("ratio_at_least", 0.7),
            f"{patients} patients, batches of {BATCH} through the sink's ReadingsWriter; "
            "time spent in writes only",
        )
    ]
    if m.loaded is not None:
        source = (
            "hypertable_detailed_size" if m.engine == "TimescaleDB" else "pg_total_relation_size"
        )
        out.append(
            ResultRow(
                "storage",
                f"bytes per reading on disk ({m.engine})",
                "B",
                Summary((m.loaded.total / rows,)),
                note=f"{_mb(m.loaded)} for {rows:,} readings ({source})",
            )
        )
    if m.compressed is not None:
        engine, n, before, after = m.compressed
        out.append(
            ResultRow(
                "storage",
                f"bytes per reading compressed ({engine}, {n:,} readings)",
                "B",
                Summary((after.total / n,)),
                Summary((before.total / n,)),
                "uncompressed",
                note=f"{_mb(before)} uncompressed, {_mb(after)} after compress_chunk on every "
                f"chunk (hypertable_detailed_size); {patients_for(n)} patients, "
                f"{n // patients_for(n) // 2:,} readings per patient and metric",
            )
        )
    return out


def _mb(s: Sizes) -> str:
    return (
        f"{s.total / MB:,.1f} MB (table {s.table / MB:,.1f} MB + indexes {s.indexes / MB:,.1f} MB)"
    )

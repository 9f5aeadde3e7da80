"""Export scenario: peak resident memory of `vitals export` (a child process, its own
getrusage from wait4) over growing ranges of readings, in CSV and Parquet. Flat memory is
the claim (docs/storage.md): the figures should not grow with the rows exported.

One table holds the largest range; each size exports a cohort of patients whose readings
add up to it. Memory does not vary between runs the way speed does: one run per size.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench import data
from bench.infra import Infra
from bench.report import Row as ResultRow
from bench.stats import Summary
from sinks.timescale.rows import COLUMNS
from vitals import contract

MAX_PATIENTS = 300
LOAD_BATCH = 10_000
KEY = "bench-export-pseudonym-key"  # pseudonyms are not what is measured
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Export:
    fmt: str
    rows: int  # as the command reported them
    peak_rss: int  # bytes
    seconds: float
    file_bytes: int


def formats() -> list[str]:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return ["csv"]
    return ["csv", "parquet"]


def run(infra: Infra, sizes: Sequence[int], notes: list[str]) -> list[ResultRow]:
    sizes = sorted(set(sizes))
    patients = max(1, min(MAX_PATIENTS, sizes[-1] // data.READINGS_PER_UPLOAD))
    # Whole uploads per patient, so a cohort of k patients holds exactly k * per_patient.
    per_patient = sizes[-1] // patients // data.READINGS_PER_UPLOAD * data.READINGS_PER_UPLOAD
    end_ms = contract.now_ms()
    asyncio.run(_load(infra.database_url, patients * per_patient, patients, end_ms))
    end = datetime.fromtimestamp(end_ms / 1000, UTC)
    span = (end - timedelta(days=30), end + timedelta(days=1))
    fmts = formats()
    if "parquet" not in fmts:
        notes.append("export: Parquet not measured (pyarrow is not installed)")
    out: list[ResultRow] = []
    with tempfile.TemporaryDirectory(prefix="vitals-bench-export-") as folder:
        for fmt in fmts:
            runs = []
            for size in sizes:
                cohort = [f"p-{p:05d}" for p in range(max(1, round(size / per_patient)))]
                runs.append(measure(infra, fmt, cohort, span, Path(folder) / f"export.{fmt}"))
            out += _rows(runs)
    return out


async def _load(database_url: str, rows: int, patients: int, end_ms: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("TRUNCATE readings")
        for batch in data.fleet_rows(rows, patients, end_ms, batch=LOAD_BATCH):
            await conn.copy_records_to_table("readings", records=batch, columns=COLUMNS)
        await conn.execute("VACUUM ANALYZE readings")
    finally:
        await conn.close()


def measure(
    infra: Infra, fmt: str, cohort: list[str], span: tuple[datetime, datetime], path: Path
) -> Export:
    """One `vitals export` as a child process: its peak RSS, its time, what it wrote."""
    env = {**os.environ, "VITALS_EXPORT_PSEUDONYM_KEY": KEY, "VITALS_LOG_LEVEL": "WARNING"}
    command = [
        sys.executable, "-m", "vitalsctl.cli", "--database-url", infra.database_url, "export",
        "--patients", ",".join(cohort), "--from", span[0].isoformat(),
        "--to", span[1].isoformat(), "--format", fmt, "--out", str(path),
    ]  # fmt: skip
    log = infra.logs / f"export-{fmt}.log"
    with open(log, "ab") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
        # wait4 reaps the child and returns its own rusage: ru_maxrss is its peak (KiB).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"vitals export failed ({proc.returncode}): see {log}")
    said = [line for line in log.read_text().splitlines() if line.startswith("exported ")]
    rows = int(said[-1].split()[1])  # "exported N readings of M of K patients to PATH"
    size = path.stat().st_size
    path.unlink()
    return Export(fmt, rows, usage.ru_maxrss * 1024, seconds, size)


def _rows(runs: list[Export]) -> list[ResultRow]:
    smallest = runs[0]
    out = []
    for r in runs:
        peer = None if r is smallest else Summary((smallest.peak_rss / MB,))
        out.append(
            ResultRow(
                "export",
                f"peak RSS of `vitals export --format {r.fmt}`, {r.rows:,} readings",
                "MB",
                Summary((r.peak_rss / MB,)),
                peer,
                f"{smallest.rows:,} readings" if peer else "",
                note=f"{r.seconds:.1f} s ({r.rows / r.seconds:,.0f} readings/s), "
                f"file {r.file_bytes / MB:,.1f} MB",
            )
        )
    return out

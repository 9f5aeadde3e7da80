"""`vitals export`: a cohort's readings over a time range, pseudonymised, to CSV or Parquet.

Rows stream from a server-side cursor (a portal in a read-only transaction) in batches of
BATCH_ROWS straight into the file, so memory holds one batch however long the range. The
file is written under a temporary name and renamed when complete: a failed export leaves
no truncated file that looks finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from vitals import progress
from vitals.errors import ConfigError, InfrastructureError
from vitals.settings import Settings
from vitalsctl.export.pseudonym import Pseudonymiser
from vitalsctl.export.writers import FORMATS, ExportRow, open_writer

BATCH_ROWS = 10_000
CONNECT_TIMEOUT_S = 10.0
MAX_ID_CHARS = 128

# The primary key's order: one index range per patient and metric, no sort.
QUERY = """
SELECT patient_id, metric, t, value, unit, device_id FROM readings
WHERE patient_id = ANY($1::text[]) AND t >= $2 AND t < $3
  AND ($4::text[] IS NULL OR metric = ANY($4::text[]))
ORDER BY patient_id, metric, t, device_id"""
# The same rows counted, for the time left on a terminal only (vitals/progress.py): a
# second pass over the key's ranges that a script has no use for.
COUNT = """
SELECT count(*) FROM readings
WHERE patient_id = ANY($1::text[]) AND t >= $2 AND t < $3
  AND ($4::text[] IS NULL OR metric = ANY($4::text[]))"""


@dataclass(frozen=True, slots=True)
class Summary:
    rows: int
    subjects: int
    path: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--cohort", type=Path, help="file of patient ids, one a line (# comments)")
    who.add_argument("--patients", help="patient ids, comma-separated")
    parser.add_argument("--from", dest="start", required=True, type=_moment, help="ISO 8601")
    parser.add_argument("--to", dest="end", required=True, type=_moment, help="ISO 8601")
    parser.add_argument("--metrics", help="metrics, comma-separated (default: all)")
    parser.add_argument("--format", choices=FORMATS, default="csv")
    parser.add_argument("--out", type=Path, required=True, help="the file to write")


def _moment(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs an offset (Z or +hh:mm): {value!r}")
    return parsed


def cohort_of(args: argparse.Namespace) -> list[str]:
    """The patient ids, de-duplicated and sorted; ConfigError when none or malformed."""
    if args.cohort is not None:
        try:
            lines = args.cohort.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the cohort file: {exc.strerror}") from exc
        ids = [line.split("#", 1)[0].strip() for line in lines]
    else:
        ids = [part.strip() for part in args.patients.split(",")]
    cohort = sorted({i for i in ids if i})
    if not cohort:
        raise ConfigError("the cohort is empty")
    too_long = sum(len(i) > MAX_ID_CHARS for i in cohort)
    if too_long:
        # Counted, not quoted: an id must not reach a terminal log.
        raise ConfigError(f"{too_long} patient id(s) longer than {MAX_ID_CHARS} characters")
    return cohort


async def run(args: argparse.Namespace, settings: Settings) -> int:
    pseudonyms = Pseudonymiser(settings.export_pseudonym_key.get_secret_value())
    cohort = cohort_of(args)
    if args.start >= args.end:
        raise ConfigError("--from must be before --to")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    summary = await export(
        settings.database_url, pseudonyms, cohort, args.start, args.end, metrics,
        args.format, args.out,
    )  # fmt: skip
    print(
        f"exported {summary.rows} readings of {summary.subjects} of {len(cohort)} patients"
        f" to {summary.path}",
        file=sys.stderr,
    )
    return 0


async def export(
    database_url: str,
    pseudonyms: Pseudonymiser,
    cohort: list[str],
    start: datetime,
    end: datetime,
    metrics: list[str] | None,
    fmt: str,
    out: Path,
) -> Summary:
    partial = out.with_name(out.name + ".partial")
    try:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise InfrastructureError(f"database unreachable: {exc}") from exc
    writer = open_writer(fmt, partial)
    stack = contextlib.ExitStack()  # the progress bar, closed with the export
    rows = 0
    subjects: set[str] = set()
    try:
        # A cursor lives in a transaction; read-only and REPEATABLE READ, so the export is
        # one consistent snapshot even while the sink keeps writing.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            params = (cohort, start, end, metrics)
            total = await conn.fetchval(COUNT, *params) if progress.on_terminal() else None
            shown = stack.enter_context(progress.bar("export", total, "rows"))
            batch: list[ExportRow] = []
            async for r in conn.cursor(QUERY, *params, prefetch=BATCH_ROWS):
                subject = pseudonyms.patient(r["patient_id"])
                subjects.add(subject)
                batch.append(
                    (subject, r["metric"], r["t"], r["value"], r["unit"],
                     pseudonyms.device(r["device_id"]))
                )  # fmt: skip
                if len(batch) >= BATCH_ROWS:
                    writer.write(batch)
                    rows += len(batch)
                    shown.update(len(batch))
                    batch = []
            if batch:
                writer.write(batch)
                rows += len(batch)
                shown.update(len(batch))
        writer.close()
        os.replace(partial, out)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    finally:
        stack.close()
        await conn.close()
    return Summary(rows, len(subjects), out)

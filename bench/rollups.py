"""What real-time aggregation costs on long ranges (issue 14): the read API's bucket queries
over a day to a month, on readings_1m and readings_1h materialized only and real-time,
with the refresh policy keeping up, a day behind, or never run.

Runs on the TimescaleDB engine compiled to WASM that the storage tests use (PGlite): its
absolute times are not a server's, the ratios between variants are the figures to read.
`python -m bench.rollups [--days 30] [--patients 4] [--every-s 60] [--out DIR]` prints
a table and writes it (Markdown and JSON) to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.storage import _engine_client
from readapi.params import EARLIEST
from readapi.queries import BUCKETS_1H, BUCKETS_1M
from vitals.db.migrate import discover, plan

# One reading every $4 seconds per patient, the whole range.
LOAD = """
INSERT INTO readings (patient_id, metric, t, device_id, value, unit, upload_id, received_at)
SELECT 'p-' || p, 'heart_rate', t, 'w1', 60 + (extract(epoch FROM t)::bigint % 40), '/min',
       gen_random_uuid(), t
FROM generate_series(1, $1::int) AS p,
     generate_series($2::timestamptz, $3::timestamptz, make_interval(secs => $4::int)) AS t"""
# (name, query, range): the read API's own statements, one patient's series.
READS = [
    ("1m over 1 day", BUCKETS_1M, timedelta(days=1)),
    ("1m over 7 days", BUCKETS_1M, timedelta(days=7)),
    ("1m over 30 days", BUCKETS_1M, timedelta(days=30)),
    ("1h over 30 days", BUCKETS_1H, timedelta(days=30)),
]
REPEATS = 5
# Only a count comes back, so the figure is the query's work, not moving 43,200 rows
# through the engine's JSON pipe (which took as long as the query itself).
COUNTED = "SELECT count(*) AS buckets, coalesce(sum(n), 0) AS n FROM ({}) q"


async def _median_ms(db: Any, query: str, now: datetime, span: timedelta) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        (got,) = await db.fetch(
            COUNTED.format(query), "p-1", "heart_rate", now - span, now, EARLIEST, 100_000
        )
        times.append((time.perf_counter() - started) * 1000)
        rows = int(got["n"])
    return statistics.median(times), rows


async def _variant(db: Any, name: str, now: datetime, out: list[dict[str, Any]]) -> None:
    for read, query, span in READS:
        if span > out[0]["span"]:
            continue
        ms, readings = await _median_ms(db, query, now, span)
        out.append({"variant": name, "read": read, "ms": round(ms, 1), "readings": readings})
        print(f"{name:<44} {read:<16} {ms:9.1f} ms  {readings:>7} readings")


async def measure(days: int, patients: int, every_s: int) -> list[dict[str, Any]]:
    engine = _engine_client()
    if engine is None or engine.engine_problem():
        raise SystemExit(engine.engine_problem() if engine else "run from a checkout")
    out: list[dict[str, Any]] = [{"span": timedelta(days=days)}]
    async with engine.Pglite.started() as db:
        await db.script("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for m in plan(discover(), timescale=True):
            async with db.transaction():
                await db.script(m.sql())
        (row,) = await db.fetch("SELECT date_trunc('minute', now()) AS now")
        now = row["now"]
        await db.execute(LOAD, patients, now - timedelta(days=days), now, every_s)

        def refresh(view: str, to: datetime) -> str:
            return f"CALL refresh_continuous_aggregate('{view}', NULL, '{to.isoformat()}')"

        await _variant(db, "real-time, never refreshed (all raw)", now, out)
        for view in ("readings_1m", "readings_1h"):
            await db.script(refresh(view, now - timedelta(days=1)))
        await _variant(db, "real-time, policy a day behind", now, out)
        for view in ("readings_1m", "readings_1h"):
            await db.script(refresh(view, now - timedelta(minutes=2)))
        await _variant(db, "real-time, policy keeping up (0013)", now, out)
        for view in ("readings_1m", "readings_1h"):
            await db.script(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only)")
        await _variant(db, "materialized only, policy keeping up", now, out)
    return out[1:]


def write(results: list[dict[str, Any]], args: argparse.Namespace) -> Path:
    days, patients, folder = args.days, args.patients, args.out
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"rollups-{stamp}.md"
    lines = [
        f"# Real-time aggregation cost ({stamp})",
        "",
        f"TimescaleDB 2.23 in WASM (PGlite); {patients} patients x {days} days, one reading "
        f"every {args.every_s} s; one patient's series read; median of {REPEATS}.",
        "",
        "| variant | read | ms | readings |",
        "|---|---|---|---|",
        *(f"| {r['variant']} | {r['read']} | {r['ms']} | {r['readings']} |" for r in results),
    ]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--every-s", type=int, default=60, help="seconds between readings")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    results = asyncio.run(measure(args.days, args.patients, args.every_s))
    print(f"written: {write(results, args)}")


if __name__ == "__main__":
    main()

"""Soak benchmark: the whole pipeline under a steady load for a bounded time.

    python -m tests.faults.soak [--minutes 10] [--patients 50] [--interval 1.0]
    make soak

Starts its own broker and PostgreSQL cluster and the four `vitals` processes,
posts `patients / interval` uploads per second (24 readings each: heart rate and SpO2
every 5 s of event time; every second patient with a desaturation), and every
`--sample` seconds prints and records each process's resident memory, every consumer
group's lag, the HTTP answers so far and the rows stored. At the end it waits for the
pipeline to catch up and judges the ledger like the fault suite does. Figures go to
.local/soak/soak-<time>.json (and .csv); the exit code is 1 if a promise was broken.
A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from pathlib import Path

import asyncpg
import orjson

from tests.faults.checks import TopicReader, Verdict, lag, settle
from tests.faults.infra import Broker, PrivatePostgres
from tests.faults.load import LoadGenerator, LoadPlan
from tests.support.stages import BASELINE, Stages, environment
from vitals import contract, progress
from vitals.db.migrate import migrate
from vitals.kafka import create_topics
from vitals.settings import Settings
from vitalsctl import localinfra
from vitalsctl.localinfra import rss_mb

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".local" / "soak"
MAX_MINUTES = 120.0


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration (≤ 120)")
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="s between a patient's uploads")
    parser.add_argument("--sample", type=float, default=10.0, help="s between samples")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if args.patients < 1 or args.interval <= 0 or args.sample <= 0:
        parser.error("--patients, --interval and --sample must be positive")
    return args


def _postmaster_pid(pg: PrivatePostgres) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


async def _stored(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM readings")
    finally:
        await conn.close()


async def soak(args: argparse.Namespace) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = OUT / f"logs-{stamp}"
    logs.mkdir()
    broker = Broker(logs / "broker")
    pg = PrivatePostgres()
    stages: Stages | None = None
    try:
        url = localinfra.create_database(pg.server_url, "vitals_soak")
        await asyncio.to_thread(migrate, url)
        settings = Settings(
            kafka_bootstrap=broker.address,
            database_url=url,
            topic_prefix="soak.",
            topic_partitions=3,
            gateway_port=localinfra.free_port(),
        )
        await create_topics(settings)
        env = environment(broker.address, url, settings.topic_prefix, settings.gateway_port)
        stages = Stages(env, logs, settings.gateway_port)
        await asyncio.to_thread(stages.ensure, BASELINE)
        alerts = TopicReader(settings, contract.ALERTS)
        await alerts.start()

        uploads_each = max(8, int(args.minutes * 60 / args.interval))
        plan = LoadPlan(patients=args.patients, interval_s=args.interval, minutes=uploads_each)
        generator = LoadGenerator(stages.gateway_url, plan)
        rate = args.patients / args.interval
        print(
            f"soak: {args.minutes:g} min, {args.patients} patients, {rate:g} uploads/s "
            f"({rate * 24:g} readings/s); figures every {args.sample:g} s"
        )
        load = asyncio.create_task(generator.run())
        pids = {name: stages.pid(name) for name in BASELINE}
        pids["broker"] = broker.nodes[0].pid
        pids["postgres"] = _postmaster_pid(pg)
        samples: list[dict] = []
        started = time.monotonic()
        # Uploads answered of those planned, on a terminal (vitals/progress.py).
        shown = progress.bar("soak", uploads_each * args.patients, "uploads")
        while not load.done():
            await asyncio.wait({load}, timeout=args.sample)
            statuses = generator.ledger.statuses()
            shown.update(sum(statuses.values()) - shown.n)
            sample = {
                "t_s": round(time.monotonic() - started, 1),
                **{f"rss_mb.{n}": round(rss_mb(pid), 1) for n, pid in pids.items()},
                **{f"lag.{g}": n for g, n in (await lag(settings)).items()},
                "answers_202": statuses.get(202, 0),
                "answers_error": sum(n for s, n in statuses.items() if s != 202),
                "rows_stored": await _stored(url),
            }
            samples.append(sample)
            print("  ".join(f"{k}={v}" for k, v in sample.items()), flush=True)
        shown.close()
        ledger = await load
        verdict = Verdict("soak", f"{args.patients} patients, {rate:g} uploads/s", "none")
        await settle(verdict, ledger, settings, alerts, since=time.monotonic(), bound_s=120)
        await alerts.stop()
        report = {
            "args": vars(args),
            "samples": samples,
            "verdict": verdict.as_dict(),
        }
        (OUT / f"soak-{stamp}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        _write_csv(OUT / f"soak-{stamp}.csv", samples)
        print(
            f"caught up in {verdict.recovery_s} s; readings accepted {verdict.readings_accepted}, "
            f"stored {verdict.readings_stored}, lost {verdict.readings_lost}, "
            f"duplicated {verdict.readings_duplicated}; alerts {verdict.alerts_published}/"
            f"{verdict.alerts_expected}, duplicated {verdict.alerts_duplicated}"
        )
        print(f"figures: {OUT / f'soak-{stamp}.json'} and .csv; problems: {verdict.problems}")
        return 1 if verdict.problems else 0
    finally:
        if stages is not None:
            await asyncio.to_thread(stages.stop_all)
        broker.stop()
        pg.destroy()


def _write_csv(path: Path, samples: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0]) if samples else ["t_s"])
        writer.writeheader()
        writer.writerows(samples)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(soak(arguments(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench` (what `make bench` runs): every scenario, the project and its peer in the
same run, alternating, several times; prints the table and writes JSON and markdown under
bench/results/ (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import (
    data,
    e2e,
    export,
    gateway,
    hop,
    machine,
    processor,
    profile,
    replay,
    restart,
    sink,
    storage,
)
from bench.infra import Infra, infrastructure
from bench.options import PEER_SCENARIOS
from bench.report import Results
from vitals import progress


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how often each scenario runs."""

    reps: int
    load: gateway.LoadSpec
    sink_rows: int
    processor_uploads: int
    processor_window_s: float
    e2e: e2e.E2ESpec
    e2e_reps: int
    storage_rows: int
    export_rows: tuple[int, ...]
    restart_patients: int  # 2.5 h of `vitals burden`'s population each (bench/restart.py)


PLANS = {
    "full": Plan(
        reps=3,
        load=gateway.LoadSpec(connections=32, warmup_s=1.0, duration_s=4.0),
        sink_rows=200_000,
        processor_uploads=8_000,
        processor_window_s=8.0,
        e2e=e2e.E2ESpec(readings_per_s=20_000, duration_s=8.0, injections_per_s=10),
        e2e_reps=2,
        # 2M readings are ~430 MB with the key index, 3.4× PostgreSQL's default
        # shared_buffers (128 MB): the load runs past the buffer cache, as a sink's does.
        storage_rows=2_000_000,
        export_rows=(100_000, 1_000_000, 3_000_000),
        restart_patients=1_000,
    ),
    "quick": Plan(
        reps=2,
        load=gateway.LoadSpec(connections=32, warmup_s=0.5, duration_s=2.0),
        sink_rows=50_000,
        processor_uploads=4_000,
        processor_window_s=4.0,
        e2e=e2e.E2ESpec(readings_per_s=20_000, duration_s=4.0, injections_per_s=10),
        e2e_reps=1,
        storage_rows=200_000,
        export_rows=(10_000, 100_000, 300_000),
        restart_patients=200,
    ),
}


def run(args: argparse.Namespace) -> int:
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    reps = plan.reps if args.reps is None else args.reps
    if reps < 1:
        print("python -m bench: --reps must be at least 1", file=sys.stderr)
        return 2
    storage_rows = plan.storage_rows if args.storage_rows is None else args.storage_rows
    export_rows = tuple(plan.export_rows if args.export_rows is None else args.export_rows)
    if min(storage_rows, *export_rows) < data.READINGS_PER_UPLOAD:
        print(
            f"python -m bench: --storage-rows and --export-rows must be at least "
            f"{data.READINGS_PER_UPLOAD} (one upload)",
            file=sys.stderr,
        )
        return 2
    # The harness's own INFO lines (migrations, topics) would bury the table.
    logging.getLogger().setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, through the clean-up: children, broker, scratch database.
    signal.signal(signal.SIGTERM, _interrupt)
    described = machine.describe()
    load_before = machine.load_average()
    described["load_before"] = round(load_before, 2)
    described["shared"] = machine.shared(load_before, described["cores"])  # type: ignore[arg-type]
    results = Results(described, mode)
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(".local") / "bench"
    shutil.rmtree(logs, ignore_errors=True)
    parts = [
        p
        for p in ("gateway", "sink", "processor", "e2e", "restart", "storage", "export")
        if p in args.only
    ]
    # Parts done, their rate and the time left, on a terminal (vitals/progress.py).
    with infrastructure(logs) as infra, progress.bar("bench", len(parts), "parts") as steps:
        if "gateway" in args.only:
            _say("gateway: project, bare FastAPI, 2 processes, load generator alone")
            results.rows += gateway.run(infra, reps, plan.load, results.notes)
            if not args.no_profile:
                raw = gateway.profile(infra, plan.load, logs / "profile-gateway.raw")
                _profiles(results, "gateway", profile.read(raw), out)
            steps.update(1)
        if "sink" in args.only:
            _say("sink: the sink's writer vs raw COPY, and with a duplicate in every batch")
            results.rows += sink.run(infra, plan.sink_rows, 2_000, reps)
            steps.update(1)
        if "processor" in args.only:
            _say("processor: vitals process vs Quix Streams, 1 and 2 instances")
            folded_path = None if args.no_profile else logs / "profile-processor.raw"
            results.rows += processor.run(
                infra, plan.processor_uploads, reps, plan.processor_window_s, folded_path
            )
            if folded_path is not None:
                _profiles(results, "processor", profile.read(folded_path), out)
            steps.update(1)
        if "e2e" in args.only:
            _say("end to end: POST -> alert at a fixed offered load")
            results.rows += e2e.run(infra, plan.e2e, plan.e2e_reps)
            results.rows += hop.run(infra.settings("hop"), reps)
            steps.update(1)
        if "restart" in args.only:
            patients = plan.restart_patients
            _say(f"restart: {patients:,} patients, checkpointed vs replay-only vs Quix Streams")
            uploads = restart.history(patients, restart.HOURS)
            load = machine.load_averages()
            found = restart.run(infra, list(restart.CHOICES), uploads, logs)
            readings = sum(len(u.readings) for u in uploads)
            del uploads  # ~5 M readings at 1,000 patients: not kept through the later parts
            restart.write(out, infra.broker, load, patients, restart.HOURS, readings, found)
            results.rows += restart.report_rows(found, patients)
            failed = [r for r in found if "error" in r]
            results.notes += [f"restart, {r['design']}: {r['error']}" for r in failed]
            steps.update(1)
        if "storage" in args.only:
            _say(f"storage: {storage_rows:,} readings, sink's writer vs raw COPY; sizes")
            results.rows += storage.run(infra, storage_rows, reps, results.notes)
            steps.update(1)
        if "export" in args.only:
            _say(f"export: peak memory of vitals export, {len(export_rows)} ranges")
            results.rows += export.run(infra, export_rows, results.notes)
            steps.update(1)
        results.machine["broker"] = infra.broker
        _side_by_side(args, plan, reps, infra, logs, results)
    load_after = machine.load_average()
    results.machine["load_after"] = round(load_after, 2)
    results.machine["duration_s"] = round(time.monotonic() - started)
    if results.machine["shared"]:
        results.notes.append(
            f"the machine was busy before the run (1-min load {load_before:.2f} on "
            f"{described['cores']} cores): other work competed for the CPU; expect noise"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A run of other scenarios than make bench's is named for them, so it never stands in
    # for latest-full / latest-quick.
    if sorted(args.only) != sorted(PEER_SCENARIOS):
        mode = "-".join([mode, *sorted(set(args.only))])
    json_path, md_path = results.write(out, f"{mode}-{stamp}")
    results.write(out, f"latest-{mode}")
    print(results.table())
    for note in results.notes:
        print(f"note: {note}")
    print(f"written: {json_path}, {md_path} (and latest-{mode}.*)")
    return 0


def _side_by_side(
    args: argparse.Namespace, plan: Plan, reps: int, infra: Infra, logs: Path, results: Results
) -> None:
    """The broker-bound scenarios again on tansu, in the same run and while the Kafka of
    `infra` still runs: the figures a user of `make run` without Java sees, beside those
    on the broker production runs, and the replay on restart on both."""
    chosen = {"gateway", "e2e", "replay"} & set(args.only)
    if not chosen:
        return
    if not infra.broker.startswith("Apache Kafka"):
        results.notes.append(
            "the broker was tansu: no side-by-side broker rows and no replay comparison "
            "(they need Apache Kafka: Java 17+)"
        )
        return
    with infrastructure(logs / "tansu", broker_kind="tansu") as on_tansu:
        tansu_rows = []
        if "gateway" in chosen:
            _say("gateway on tansu")
            tansu_rows += gateway.run(on_tansu, reps, plan.load, [])
        if "e2e" in chosen:
            _say("end to end on tansu")
            tansu_rows += e2e.run(on_tansu, plan.e2e, plan.e2e_reps)
        results.rows += [
            dataclasses.replace(row, scenario=f"{row.scenario} (tansu)") for row in tansu_rows
        ]
        if "replay" in chosen:
            _say("replay on restart: Apache Kafka vs tansu, the same history")
            results.rows += replay.run(infra, on_tansu, min(reps, 2))


def _profiles(results: Results, stage: str, folded: str, out: Path) -> None:
    if not folded:
        results.notes.append(f"no {stage} profile: py-spy wrote nothing (see .local/bench/)")
        return
    (out / f"profile-{stage}.folded").write_text(profile.compact(folded))
    results.profiles[f"{stage}: self time"] = profile.top(folded, 12, by="self")
    # The project's own functions below the entry point (cli, runner loop) that wraps all.
    own_code = ("ingest/", "processors/", "sinks/", "vitals/")
    inclusive = profile.top(folded, 400, by="inclusive")
    results.profiles[f"{stage}: project functions, inclusive"] = [
        (name, share)
        for name, share in inclusive
        if name.split("(")[-1].startswith(own_code) and "vitalsctl/cli.py" not in name
    ][:14]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)

"""The one console command, `vitals`, with a sub-command per process.

Each sub-command is a process an ops team can run and scale on its own. Settings come from
`VITALS_*` environment variables (see README); a few flags override them for convenience.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from vitals import lifecycle, logs
from vitals.errors import VitalsError
from vitals.settings import Settings, settings_help
from vitalsctl import audit, devrun, evaluate, registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitals", description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers (VITALS_KAFKA_BOOTSTRAP)")
    parser.add_argument("--database-url", help="PostgreSQL URL (VITALS_DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _process(sub, "gateway", "gateway", "HTTP gateway: POST /v1/readings into Kafka")
    _process(sub, "api", "api", "read API: readings, alerts and NEWS2 for readers")
    export = sub.add_parser("export", help="pseudonymised research export of readings")
    from vitalsctl.export import command as export_command

    export_command.add_arguments(export)
    _process(sub, "process", "process", "processor: windows and detectors -> vitals.detections")

    sink = sub.add_parser("sink", help="sinks").add_subparsers(dest="sink", required=True)
    _process(sink, "timescale", "sink", "vitals.readings -> readings table")
    _process(sink, "alerts", "sink", "vitals.detections -> vitals.alerts and alerts table")
    _process(sink, "fhir-notify", "sink", "vitals.alerts -> FHIR Subscription endpoints")

    db = sub.add_parser("db", help="database").add_subparsers(dest="db", required=True)
    for name, summary in (
        ("migrate", "apply the SQL migrations and the retention settings"),
        ("prune", "delete readings and scores past their retention (daily, plain PostgreSQL)"),
    ):
        db.add_parser(
            name,
            help=summary,
            epilog=settings_help("db"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    db.add_parser("roles", help="each process's login role, granted only its group role")

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="topics", required=True
    )
    topics.add_parser(
        "create",
        help="create the pipeline's topics if missing; check the configs of those that exist",
    )

    sim = sub.add_parser("simulate", help="a simulated fleet of wearables posting readings")
    from vitalsctl import simulate

    simulate.add_arguments(sim)

    validate = sub.add_parser("validate", help="check a detector against reference data")
    checks = validate.add_subparsers(dest="validate", required=True)
    evaluate.add_rhythm_arguments(
        checks.add_parser("rhythm", help="rhythm detector: real NSR/ectopy, synthetic AF")
    )
    evaluate.add_burden_arguments(
        sub.add_parser("burden", help="alarm burden of the detectors on a population")
    )

    from vitalsctl import status

    status.add_arguments(
        sub.add_parser(
            "status",
            help="a running deployment in one screen; exit 1 when it needs a person",
            epilog=settings_help("status"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )

    dev = sub.add_parser("dev", help="the whole pipeline on local defaults (make run)")
    from vitalsctl import dev as dev_module

    dev_module.add_arguments(dev)

    # gateways, admins, readers, devices, teams: the registry (docs/security.md)
    registry.add_arguments(sub)
    audit.add_arguments(sub)  # the read audit: verify, who read a patient
    return parser


def _process(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    reads: str,
    summary: str,
) -> argparse.ArgumentParser:
    """A long-running process's sub-command: its help lists the settings it reads."""
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary}. Runs until SIGTERM or Ctrl-C, configured by environment.",
        epilog=settings_help(reads),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {}
    if args.kafka:
        overrides["kafka_bootstrap"] = args.kafka
    if args.database_url:
        overrides["database_url"] = args.database_url
    # Beside a running `make run`, its database and broker are the defaults (devrun.py);
    # the environment and the flags still win. `dev` itself never reads another run's.
    env_file = None if args.command == "dev" else devrun.active(devrun.run_file())
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except ValueError as exc:
        print(f"vitals: bad settings: {exc}", file=sys.stderr)
        return 2
    if env_file is not None and sys.stderr.isatty():
        print(f"vitals: defaults from the running `vitals dev` ({env_file})", file=sys.stderr)
    logs.configure(settings.log_level)
    lifecycle.tune_gc()
    try:
        if args.command == "burden":  # CPU-bound, in worker processes: no event loop
            return evaluate.burden(args, settings)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_dispatch(args, settings)) or 0
    except VitalsError as exc:
        print(f"vitals: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop (from uvicorn[standard]) halves the event loop's share of the gateway's time.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without uvloop wheels
        return None
    return uvloop.new_event_loop


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int | None:
    match args.command:
        case "gateway":
            from ingest.server import serve

            await serve(settings)
        case "api":
            from readapi.server import serve as serve_api

            await serve_api(settings)
        case "export":
            from vitalsctl.export import command as export_command

            return await export_command.run(args, settings)
        case "process":
            from processors.runner import run

            await run(settings)
        case "sink" if args.sink == "timescale":
            from sinks.timescale.runner import run as run_timescale

            await run_timescale(settings)
        case "sink" if args.sink == "fhir-notify":
            from sinks.fhir_notify.runner import run as run_fhir_notify

            await run_fhir_notify(settings)
        case "sink":
            from sinks.alerts.runner import run as run_alerts

            await run_alerts(settings)
        case "db" if args.db == "roles":
            from vitals.db import logins

            passwords = logins.parse_passwords(settings.db_login_passwords.get_secret_value())
            done = await asyncio.to_thread(logins.ensure_logins, settings.database_url, passwords)
            print(f"login roles set up: {', '.join(done)}")
        case "db" if args.db == "prune":
            from vitals.db.retention import prune

            pruned = await asyncio.to_thread(prune, settings.database_url, settings)
            if pruned is None:
                print("TimescaleDB: its retention policies drop old chunks daily; nothing to do")
            for table, rows in (pruned or {}).items():
                print(f"{table}: {rows:,} rows older than their retention deleted")
        case "db":
            from vitals.db.migrate import migrate

            applied = await asyncio.to_thread(migrate, settings.database_url, retention=settings)
            print(f"migrations applied: {applied or 'none (up to date)'}")
        case "topics":
            from vitals.kafka import create_topics, topic_differences

            created = await create_topics(settings)
            print(f"topics created: {created or 'none (all exist)'}")
            differences = await topic_differences(settings)
            for difference in differences:
                print(f"differs: {difference}", file=sys.stderr)
            if differences:
                print(
                    "the topics above differ from what the pipeline needs: change them with "
                    "kafka-configs.sh / kafka-topics.sh (docs/operations.md#topics)",
                    file=sys.stderr,
                )
                return 1
        case "simulate":
            from vitalsctl import simulate

            return await simulate.run(settings, args)
        case "validate":
            return evaluate.rhythm(args, settings)
        case "status":
            from vitalsctl import status

            return await status.run(settings, args)
        case "dev":
            from vitalsctl import dev

            return await dev.run(settings, args)
        case "audit":
            return await audit.run(args, settings)
        case "gateways" | "admins" | "readers" | "devices" | "teams":
            return await registry.run(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

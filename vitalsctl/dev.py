"""`vitals dev` (what `make run` calls): the whole pipeline on local defaults.

Starts a local broker (Apache Kafka when Java 17+ is here, else tansu; VITALS_DEV_BROKER
chooses: vitalsctl/localkafka.py), finds PostgreSQL (VITALS_DATABASE_URL if set, else
the server at 127.0.0.1:5432 with a `vitals_dev` database, else a private cluster under
.local/), creates topics, migrates, then runs gateway, read API, processor, both sinks
and the simulator as child processes, and prints a live summary and every alert as it
is published. Ctrl-C (or SIGTERM) stops every process it started, cleanly.

The gateway runs as deployments run it: keys and devices from the database, devices
required to be registered. `dev` issues the simulator an admin key (revoked at the end),
and the simulator registers its watches through the admin API before it posts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import orjson

from vitals import contract, kafka
from vitals.lifecycle import stop_on_signals
from vitals.settings import LOCAL_GATEWAY_ID, LOCAL_GATEWAY_TOKEN, LOCAL_READER_TOKEN, Settings
from vitalsctl import localinfra, localkafka

LOCAL = Path.cwd() / ".local"
DEMO_SETTINGS = {
    # Short enough that a person sees a device-silence alert within a minute (the
    # simulator's silent watch stops at its start: vitalsctl/simulate.py default_events).
    "VITALS_SILENCE_AFTER_S": "45",
    "VITALS_SILENCE_CHECK_INTERVAL_S": "2",
    # An alert left alone on the console escalates within a couple of minutes, not 5-15.
    "VITALS_ESCALATION": "high:60,180;medium:120,300",
    # The real path: keys and the device registry from the database, devices enforced. The
    # local token stays valid beside issued keys (the registry would otherwise drop it).
    "VITALS_GATEWAY_REGISTRY": "true",
    "VITALS_REQUIRE_DEVICE_REGISTRY": "true",
    "VITALS_GATEWAY_CREDENTIALS": f"{LOCAL_GATEWAY_ID}:{LOCAL_GATEWAY_TOKEN}",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (0 = until Ctrl-C)",
    )
    parser.add_argument("--no-simulator", action="store_true")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    logs_dir = LOCAL / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        kind, why = localkafka.broker_kind(os.environ.get("VITALS_DEV_BROKER") or None)
        _say(f"starting the broker ({why}) ...")
        broker = stack.enter_context(localkafka.local_broker(kind, LOCAL / "broker", LOCAL))
        bootstrap = broker.bootstrap
        database_url = _database(stack)
        settings = settings.model_copy(
            update={"kafka_bootstrap": bootstrap, "database_url": database_url}
        )
        await kafka.create_topics(settings)
        from vitals.db.migrate import migrate

        await asyncio.to_thread(migrate, database_url)
        env = _child_env(settings)
        _say(f"broker   {bootstrap}: {broker.describe()}, {broker.resources()}")
        _say(f"database {_redact(database_url)}")
        _say(
            f"gateway  http://{settings.gateway_host}:{settings.gateway_port}  "
            f"(token: {LOCAL_GATEWAY_TOKEN})   logs: {logs_dir}/"
        )
        _say(
            "registry on: the simulated watches are registered at start; register your own "
            "with `vitals devices register` (docs/security.md)"
        )
        _say(
            f"read API http://{settings.api_host}:{settings.api_port}  "
            f"(token: {LOCAL_READER_TOKEN}; docs/read-api.md)"
        )
        _say(
            f"console  http://{settings.api_host}:{settings.api_port}/console/  "
            f"(sign in with the reader token {LOCAL_READER_TOKEN})"
        )
        async with _simulator_admin_key(database_url) as key_file:
            children = await _start_children(settings, env, logs_dir, args, key_file)
            try:
                crashed = await _summary(settings, children, stop, args.duration)
            finally:
                await _stop_children(children)
    if crashed:
        _say(f"stopped: {crashed} exited on its own (see .local/logs/{crashed}.log)")
        return 1
    _say("stopped")
    return 0


@contextlib.asynccontextmanager
async def _simulator_admin_key(database_url: str) -> AsyncIterator[Path]:
    """An admin key for the simulator's registrations, in a file only we can read; revoked
    when `dev` stops, so no run leaves a live admin key behind."""
    from frontdoor import registry_store

    key_file = LOCAL / f"simulator-admin-key.{os.getpid()}"  # two runs never share one
    actor = ("cli", "vitals-dev")
    conn = await asyncpg.connect(database_url)
    try:
        key_id, key = await registry_store.issue_key(
            conn, "admin", "dev-simulator", expires_at=None, actor=actor
        )
    finally:
        await conn.close()
    key_file.unlink(missing_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n", encoding="utf-8")
    try:
        yield key_file
    finally:
        key_file.unlink(missing_ok=True)
        conn = await asyncpg.connect(database_url)
        try:
            await registry_store.revoke_key(conn, key_id, actor=actor)
        finally:
            await conn.close()


def _database(stack: contextlib.ExitStack) -> str:
    if url := os.environ.get("VITALS_DATABASE_URL"):
        return url
    server = stack.enter_context(localinfra.postgres_server(None, LOCAL / "pg"))
    return localinfra.create_database(server, "vitals_dev")


def _child_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **DEMO_SETTINGS}
    env["VITALS_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["VITALS_DATABASE_URL"] = settings.database_url
    env["VITALS_MIGRATE_ON_START"] = "false"
    return env


SUMMARY_EVERY_S = 10.0  # alerts print as they arrive; the rates every 10 s

PROCESSES = {
    "gateway": ["gateway"],
    "api": ["api"],
    "processor": ["process"],
    "sink-timescale": ["sink", "timescale"],
    "sink-alerts": ["sink", "alerts"],
}


async def _start_children(
    settings: Settings,
    env: dict[str, str],
    logs_dir: Path,
    args: argparse.Namespace,
    admin_key_file: Path,
) -> dict[str, asyncio.subprocess.Process]:
    children: dict[str, asyncio.subprocess.Process] = {}
    for name, command in PROCESSES.items():
        children[name] = await _spawn(name, command, env, logs_dir)
    localinfra.wait_for_port(settings.gateway_host, settings.gateway_port, 30)
    if not args.no_simulator:
        simulate = ["simulate", "--patients", str(args.patients)]
        simulate += ["--admin-key-file", str(admin_key_file)]
        children["simulator"] = await _spawn("simulator", simulate, env, logs_dir)
    return children


async def _spawn(
    name: str, command: list[str], env: dict[str, str], logs_dir: Path
) -> asyncio.subprocess.Process:
    log = open(logs_dir / f"{name}.log", "ab")  # noqa: ASYNC230 - tiny, once per child
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vitalsctl.cli",
        *command,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )


async def _stop_children(children: dict[str, asyncio.subprocess.Process]) -> None:
    # Simulator and gateway first (no new input), then the consumers finish and commit.
    for name in ("simulator", "gateway", "api", "processor", "sink-timescale", "sink-alerts"):
        proc = children.get(name)
        if proc is None or proc.returncode is not None:
            continue
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        _say(f"{name} stopped (exit {proc.returncode})")


async def _summary(
    settings: Settings,
    children: dict[str, asyncio.subprocess.Process],
    stop: asyncio.Event,
    duration: float,
) -> str | None:
    """Print alerts and rates until stopped or the duration is up; the name of a child that
    exited on its own, if one did (then everything stops: a pipeline short of a stage
    would lose what it should show)."""
    deadline = time.monotonic() + duration if duration else None
    consumer = kafka.consumer(settings, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    consumer.subscribe([settings.topic(contract.ALERTS)])
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/metrics"
    previous = (0.0, 0.0, time.monotonic() - SUMMARY_EVERY_S)
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=2000)
                for record in (r for part in batches.values() for r in part):
                    _print_alert(orjson.loads(record.value))
                now = time.monotonic()
                if now - previous[2] >= SUMMARY_EVERY_S:
                    previous = await _print_summary(client, url, pool, previous, now)
                for name, proc in children.items():
                    if proc.returncode is not None and name != "simulator":
                        _say(f"{name} exited with {proc.returncode}: see .local/logs/{name}.log")
                        return name
                if deadline is not None and now >= deadline:
                    return None
    finally:
        await consumer.stop()
        await pool.close()
    return None


async def _print_summary(
    client: httpx.AsyncClient,
    url: str,
    pool: asyncpg.Pool,
    previous: tuple[float, float, float],
    now: float,
) -> tuple[float, float, float]:
    accepted, rejected = await _gateway_counts(client, url)
    rows = await pool.fetchval("SELECT count(*) FROM readings")
    span = now - previous[2]
    _say(
        f"accepted {(accepted - previous[0]) / span:7.0f}/s  "
        f"rejected {(rejected - previous[1]) / span:5.1f}/s  "
        f"rows in database {rows:>9,}  (totals: accepted {accepted:,.0f}, rejected {rejected:,.0f})"
    )
    return accepted, rejected, now


_SAMPLE = re.compile(r"^(\w+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE)


async def _gateway_counts(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """Readings accepted and rejected so far, from the gateway's own metrics."""
    try:
        text = (await client.get(url)).text
    except httpx.HTTPError:
        return 0.0, 0.0
    accepted = rejected = 0.0
    for name, _labels, value in _SAMPLE.findall(text):
        if name == "vitals_gateway_readings_accepted_total":
            accepted += float(value)
        elif name == "vitals_gateway_readings_rejected_total":
            rejected += float(value)
    return accepted, rejected


def _print_alert(alert: dict) -> None:
    flag = " (retrospective)" if alert.get("retrospective") else ""
    value = (
        "" if alert.get("value") is None else f" {alert.get('metric') or 'value'}={alert['value']}"
    )
    _say(
        f"ALERT {alert['state']:<8} {alert['severity']:<6} {alert['rule']:<15} "
        f"patient {alert['patient_id']}{value} episode since {alert['episode_start']}{flag}"
    )


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def _redact(url: str) -> str:
    return re.sub(r"//([^:@/]+):[^@]+@", r"//\1:***@", url)

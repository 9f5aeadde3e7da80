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

from vitals import contract, kafka, logs
from vitals.lifecycle import stop_on_signals
from vitals.settings import LOCAL_GATEWAY_ID, LOCAL_GATEWAY_TOKEN, LOCAL_READER_TOKEN, Settings
from vitalsctl import devrun, devscreen, localinfra, localkafka, stages

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
    # The screen is for people: this process's own JSON logs (migrations, Kafka clients)
    # go to a file beside the children's.
    with contextlib.ExitStack() as stack:
        log_file = stack.enter_context(open(logs_dir / "dev.log", "a", encoding="utf-8"))  # noqa: ASYNC230
        logs.configure(settings.log_level, stream=log_file)
        stack.callback(logs.configure, settings.log_level)  # back to stderr before it closes
        kind, why = localkafka.broker_kind(os.environ.get("VITALS_DEV_BROKER") or None)
        _say(f"starting the broker ({why}) ...")
        broker = stack.enter_context(localkafka.local_broker(kind, LOCAL / "broker", LOCAL))
        bootstrap = broker.bootstrap
        database_url = _database(stack)
        # Each consumer's probe server on a free port, named for `vitals status` run beside.
        probes = ",".join(f"{n}=127.0.0.1:{localinfra.free_port()}" for n in stages.CONSUMERS)
        settings = settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "database_url": database_url,
                "status_probes": probes,
            }
        )
        await kafka.create_topics(settings)
        from vitals.db.migrate import migrate

        applied = await asyncio.to_thread(migrate, database_url, retention=settings)
        env = _child_env(settings)
        _say(f"broker   {bootstrap}: {broker.describe()}, {broker.resources()}")
        schema = f"{len(applied)} migrations applied" if applied else "schema up to date"
        _say(f"database {_redact(database_url)}  ({schema})")
        _say_where(settings, logs_dir)
        _say_run_file(stack, settings)
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


def _say_where(settings: Settings, logs_dir: Path) -> None:
    """Where a person looks next: each front door, its credential and its API docs."""
    gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
    api = f"http://{settings.api_host}:{settings.api_port}"
    _say(f"gateway  {gateway}  (token: {LOCAL_GATEWAY_TOKEN})  API docs {gateway}/docs")
    _say(f"read API {api}  (token: {LOCAL_READER_TOKEN})  API docs {api}/docs")
    _say(f"console  {api}/console/  (sign in with the reader token {LOCAL_READER_TOKEN})")
    _say(
        f"FHIR     {gateway}/fhir/r4 (Bundles in), {api}/fhir/r4 (metadata, Observation,"
        " DetectedIssue for alerts, Subscription: docs/fhir.md)"
    )
    _say(f"logs     {logs_dir}/  one JSON-lines file per process (dev.log: this screen's own)")
    _say(
        "registry on: the simulated watches are registered at start; register your own "
        "with `vitals devices register` (docs/security.md)"
    )


def _say_run_file(stack: contextlib.ExitStack, settings: Settings) -> None:
    """Tell the commands run beside this one where the broker and database are."""
    values = {
        "VITALS_DATABASE_URL": settings.database_url,
        "VITALS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "VITALS_TOPIC_PREFIX": settings.topic_prefix,
        "VITALS_GATEWAY_HOST": settings.gateway_host,
        "VITALS_GATEWAY_PORT": str(settings.gateway_port),
        "VITALS_API_HOST": settings.api_host,
        "VITALS_API_PORT": str(settings.api_port),
        "VITALS_STATUS_PROBES": settings.status_probes,
    }
    path = devrun.run_file(LOCAL)
    if devrun.write(path, values):
        stack.callback(devrun.remove, path)
        _say(f"`vitals` commands run in {Path.cwd()} use this run's database and broker ({path})")
    else:
        _say(f"another `vitals dev` owns {path}: commands run here reach that run, not this one")
    paste = {
        k: v for k, v in values.items() if k in ("VITALS_DATABASE_URL", "VITALS_KAFKA_BOOTSTRAP")
    }
    _say(f"from another folder, paste: {_redact(devrun.export_line(paste))}")


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


async def _start_children(
    settings: Settings,
    env: dict[str, str],
    logs_dir: Path,
    args: argparse.Namespace,
    admin_key_file: Path,
) -> dict[str, asyncio.subprocess.Process]:
    children: dict[str, asyncio.subprocess.Process] = {}
    probes = settings.probes()
    for name in stages.STAGES:
        if name != "simulator":
            own = (
                {**env, "VITALS_PROBE_PORT": probes[name].rpartition(":")[2]}
                if name in probes
                else env
            )
            children[name] = await _spawn(name, [], own, logs_dir)
    localinfra.wait_for_port(settings.gateway_host, settings.gateway_port, 30)
    if not args.no_simulator:
        options = ["--patients", str(args.patients), "--admin-key-file", str(admin_key_file)]
        children["simulator"] = await _spawn("simulator", options, env, logs_dir)
    return children


async def _spawn(
    name: str, options: list[str], env: dict[str, str], logs_dir: Path
) -> asyncio.subprocess.Process:
    """Stage `name` (vitalsctl/stages.py) with `options`, as an asyncio child process."""
    log = open(logs_dir / f"{name}.log", "ab")  # noqa: ASYNC230 - tiny, once per child
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *stages.argv(name),
        *options,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )


async def _stop_children(children: dict[str, asyncio.subprocess.Process]) -> None:
    for name in stages.STOP_ORDER:
        proc = children.get(name)
        if proc is None:
            continue
        if proc.returncode is not None:
            _say(f"{name} had exited before (exit {proc.returncode})")
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
    """Print alerts, figures and warnings until stopped or the duration is up; the name of
    a stage that exited on its own, if one did (then everything stops: a pipeline short of
    a stage would lose what it should show). The simulator's exit is named; the pipeline
    runs on without it (post readings yourself)."""
    deadline = time.monotonic() + duration if duration else None
    consumer = kafka.consumer(settings, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    consumer.subscribe([settings.topic(contract.ALERTS)])
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    doors = {
        "gateway": f"http://{settings.gateway_host}:{settings.gateway_port}",
        "api": f"http://{settings.api_host}:{settings.api_port}",
    }
    screen = _Screen(settings.registry_age_bound_s(), time.monotonic())
    _say(devscreen.LEGEND)
    last = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=2000)
                for record in (r for part in batches.values() for r in part):
                    _print_alert(orjson.loads(record.value))
                now = time.monotonic()
                if now - last >= SUMMARY_EVERY_S:
                    last = now
                    await screen.update(client, doors, pool)
                for name, proc in children.items():
                    if proc.returncode is None or name in screen.exits_named:
                        continue
                    screen.exits_named.add(name)
                    _say(f"{name} exited with {proc.returncode}: see .local/logs/{name}.log")
                    if name != "simulator":
                        return name
                if deadline is not None and now >= deadline:
                    return None
    finally:
        await consumer.stop()
        await pool.close()
    return None


class _Screen:
    """The figures and warnings printed every SUMMARY_EVERY_S (vitalsctl/devscreen.py)."""

    def __init__(self, age_bound_s: float, started: float) -> None:
        self.age_bound_s = age_bound_s
        self.previous: dict[str, devscreen.Sample] = {}
        self.baseline = devscreen.Sample(started)  # every counter starts at 0
        self.stale: set[str] = set()
        self.not_ready: dict[str, str] = {}
        self.exits_named: set[str] = set()
        self.glitches_explained = False

    async def update(
        self, client: httpx.AsyncClient, doors: dict[str, str], pool: asyncpg.Pool
    ) -> None:
        samples: dict[str, devscreen.Sample | None] = {}
        why_not = ""
        for door, url in doors.items():
            try:
                answer = await client.get(f"{url}/metrics")
                answer.raise_for_status()
                samples[door] = devscreen.parse(answer.text, time.monotonic())
            except (httpx.HTTPError, ValueError) as exc:  # unreachable, or not Prometheus text
                samples[door] = None
                if door == "gateway":
                    why_not = type(exc).__name__
            await self._readiness(client, door, url)
        try:
            rows = await pool.fetchval("SELECT count(*) FROM readings")
        except (OSError, asyncpg.PostgresError):
            rows = None
        gateway = samples["gateway"]
        _say(devscreen.summary(gateway, self.previous.get("gateway", self.baseline), rows, why_not))
        if gateway is not None and gateway.rejected_total and not self.glitches_explained:
            self.glitches_explained = True
            _say(devscreen.GLITCHES)
        for door, sample in samples.items():
            if sample is None:
                continue
            previous = self.previous.get(door)
            for line in devscreen.warnings(door, sample, previous, self.age_bound_s, self.stale):
                _say(line)
            self.previous[door] = sample  # a failed read keeps the last good one

    async def _readiness(self, client: httpx.AsyncClient, door: str, url: str) -> None:
        """A line when a front door stops being ready, and one when it is again."""
        try:
            answer = await client.get(f"{url}/readyz")
            why = "" if answer.status_code == 200 else answer.json().get("detail", "")
        except (httpx.HTTPError, ValueError) as exc:
            why = f"no answer ({type(exc).__name__})"
        if why and self.not_ready.get(door) != why:
            _say(f"WARNING {door} not ready: {why} (GET {url}/readyz)")
        elif not why and door in self.not_ready:
            _say(f"{door} ready")
        if why:
            self.not_ready[door] = why
        else:
            self.not_ready.pop(door, None)


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

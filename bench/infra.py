"""What a benchmark run needs and cleans up: its own broker (VITALS_BENCH_BROKER=kafka|tansu;
Apache Kafka when Java 17+ is here) and a scratch database on
a PostgreSQL server (the given one, the local one, or a private cluster; dropped
afterwards), and per-scenario settings with their own topics."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from vitals.db.migrate import migrate
from vitals.settings import Settings
from vitalsctl import localinfra, localkafka


@dataclass(frozen=True, slots=True)
class Infra:
    bootstrap: str
    database_url: str
    logs: Path
    broker: str = ""  # which broker, for the results

    def settings(self, label: str, **overrides: object) -> Settings:
        """Settings for one scenario run: fresh topic prefix and consumer groups."""
        tag = uuid.uuid4().hex[:6]
        if "rate_limit_per_s" in Settings.model_fields:
            # One load generator speaks for the whole fleet under one gateway id: the
            # per-gateway limit would measure the limit, not the gateway.
            overrides.setdefault("rate_limit_per_s", 0.0)
        return Settings(
            kafka_bootstrap=self.bootstrap,
            database_url=self.database_url,
            topic_prefix=f"bench.{label}.{tag}.",
            processor_group=f"bench-processor-{tag}",
            sink_group=f"bench-sink-{tag}",
            alerts_group=f"bench-alerts-{tag}",
            migrate_on_start=False,
            log_level="WARNING",
            **overrides,
        )

    def env(self, settings: Settings) -> dict[str, str]:
        """The environment that gives a `vitals` child process these settings."""
        env = {**os.environ}
        # Only what differs from the defaults: the rest the child reads as we did.
        dumped = settings.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        for name, value in dumped.items():
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            env[f"VITALS_{name.upper()}"] = text
        return env


@contextmanager
def infrastructure(
    logs: Path, pg_server: str | None = None, broker_kind: str | None = None
) -> Iterator[Infra]:
    logs.mkdir(parents=True, exist_ok=True)
    kind, _ = localkafka.broker_kind(broker_kind or os.environ.get("VITALS_BENCH_BROKER") or None)
    given = pg_server or os.environ.get("VITALS_BENCH_PG_SERVER")
    name = f"vitals_bench_{uuid.uuid4().hex[:8]}"
    # A private cluster goes under /tmp, not beside the logs: the working directory may be
    # root-only (pytest's tmp_path), and PostgreSQL runs as its own user.
    with (
        tempfile.TemporaryDirectory(prefix="vitals-bench-pg-") as scratch,
        localinfra.postgres_server(given, Path(scratch)) as server,
        localkafka.local_broker(kind, logs / "broker", Path.cwd() / ".local") as broker,
    ):
        url = localinfra.create_database(server, name, exist_ok=False)
        try:
            migrate(url)
            yield Infra(broker.bootstrap, url, logs, broker.describe())
        finally:
            localinfra.drop_database(server, name)

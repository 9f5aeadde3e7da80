"""The pipeline as ops run it: each stage a `vitals` process, configured by environment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from vitals import contract, kafka
from vitals.settings import LOCAL_GATEWAY_TOKEN, Settings
from vitalsctl import localinfra, stages


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    def start(self, name: str) -> None:
        self.procs[name] = stages.start(name, self.env, self.logs / f"{name}.log")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(timeout)

    def assert_running(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited: see {self.logs / name}.log"


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    port = localinfra.free_port()
    settings = settings.model_copy(update={"gateway_port": port})
    env = {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "VITALS_DATABASE_URL": settings.database_url,
        "VITALS_TOPIC_PREFIX": settings.topic_prefix,
        "VITALS_GATEWAY_PORT": str(port),
        "VITALS_MIGRATE_ON_START": "false",
        "VITALS_SILENCE_CHECK_INTERVAL_S": "1",
    }
    p = Pipeline(settings, env, tmp_path)
    for name in stages.PIPELINE:
        p.start(name)
    try:
        _wait_ready(p)
        yield p
    finally:
        for name in list(p.procs):
            try:
                p.stop(name, timeout=20)
            except subprocess.TimeoutExpired:
                p.procs.get(name, None) and p.procs[name].kill()


def _wait_ready(p: Pipeline, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p.assert_running()
        try:
            if httpx.get(f"{p.gateway_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("gateway not ready")


def post(p: Pipeline, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{p.gateway_url}/v1/readings",
        content=orjson.dumps(body),
        timeout=10,
        headers={
            "Authorization": f"Bearer {LOCAL_GATEWAY_TOKEN}",
            "Content-Type": "application/json",
            **headers,
        },
    )


@pytest.fixture
async def alerts(settings: Settings) -> AsyncIterator[AlertReader]:
    reader = AlertReader(settings)
    await reader.start()
    yield reader
    await reader.stop()


class AlertReader:
    """Reads every message of the public alert topic from its beginning."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = kafka.consumer(settings, group_id=None)
        self.topic = settings.topic(contract.ALERTS)
        self.seen: list[dict] = []

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe([self.topic])

    async def stop(self) -> None:
        await self.consumer.stop()

    async def until(self, predicate, within_s: float = 60) -> list[dict]:  # noqa: ANN001
        """Read until predicate(seen) holds; fails after `within_s` seconds."""
        deadline = time.monotonic() + within_s
        while not predicate(self.seen):
            assert time.monotonic() < deadline, f"timed out; alerts seen: {self.seen}"
            batches = await self.consumer.getmany(timeout_ms=500)
            self.seen += [orjson.loads(r.value) for part in batches.values() for r in part]
        return self.seen

    async def settle(self, quiet_s: float = 3.0) -> list[dict]:
        """Keep reading until nothing new arrives for `quiet_s` (to catch duplicates)."""
        await asyncio.sleep(0)
        while True:
            batches = await self.consumer.getmany(timeout_ms=int(quiet_s * 1000))
            new = [orjson.loads(r.value) for part in batches.values() for r in part]
            if not new:
                return self.seen
            self.seen += new

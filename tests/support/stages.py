"""The pipeline's stages as real `vitals` processes that the suite can signal.

Each stage runs as ops run it (`python -m vitalsctl.cli <command>`, configured by VITALS_*
variables). Consumers get a probe port so the suite can wait for their /readyz.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vitalsctl import localinfra, stages
from vitalsctl.localinfra import rss_mb
from vitalsctl.stages import PIPELINE, kind_of

BASELINE = PIPELINE  # one of each: the pipeline every scenario starts from


@dataclass
class Stages:
    env: dict[str, str]
    logs: Path
    gateway_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    probe_ports: dict[str, int] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self, name: str) -> None:
        env = dict(self.env)
        if kind_of(name) != "gateway":
            port = self.probe_ports.setdefault(name, localinfra.free_port())
            env["VITALS_PROBE_PORT"] = str(port)
        source = os.environ.get("VITALS_FAULTS_SOURCE")
        if source:  # the stages from another checkout of the code (a snapshot under test)
            env["PYTHONPATH"] = source
        cwd = source or None  # `python -m` puts the working directory first on sys.path
        # In the suite's session: the test runner's own Ctrl-C stops the stages too.
        self.procs[name] = stages.start(
            name, env, self.logs / f"{name}.log", cwd=cwd, new_session=False
        )

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def kill(self, name: str) -> None:
        """kill -9: no handler runs, nothing is flushed or committed."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def terminate(self, name: str, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def ready(self, name: str) -> bool:
        url = (
            f"{self.gateway_url}/readyz"
            if kind_of(name) == "gateway"
            else f"http://127.0.0.1:{self.probe_ports[name]}/readyz"
        )
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, names: list[str] | tuple[str, ...], timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting:
            for name in list(waiting):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited {proc.returncode}: see {self.logs}")
                if self.ready(name):
                    waiting.remove(name)
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {waiting}")
            time.sleep(0.2)

    def ensure(self, names: tuple[str, ...] = BASELINE) -> None:
        """Start whichever of `names` is not running; stop extra instances."""
        for name in list(self.procs):
            if name not in names:
                self.terminate(name)
        for name in names:
            if not self.running(name):
                self.procs.pop(name, None)
                self.start(name)
        self.wait_ready(names)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.terminate(name, timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def rss_mb(self, name: str) -> float:
        """Resident memory of a stage process, from /proc (Linux)."""
        return rss_mb(self.procs[name].pid)


def environment(
    kafka: str, database_url: str, prefix: str, gateway_port: int, **extra: str
) -> dict[str, str]:
    """The VITALS_* variables every stage gets."""
    return {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": kafka,
        "VITALS_DATABASE_URL": database_url,
        "VITALS_TOPIC_PREFIX": prefix,
        "VITALS_TOPIC_PARTITIONS": "3",
        "VITALS_GATEWAY_PORT": str(gateway_port),
        "VITALS_MIGRATE_ON_START": "false",
        # Short enough that a frozen broker is felt within a scenario.
        "VITALS_PRODUCE_TIMEOUT_S": "2",
        "VITALS_RETRY_AFTER_S": "1",
        # No device-silence alerts: the expected alerts are exactly the injected events.
        "VITALS_SILENCE_AFTER_S": "86400",
        "VITALS_SHUTDOWN_GRACE_S": "10",
        **extra,
    }

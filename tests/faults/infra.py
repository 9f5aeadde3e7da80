"""Infrastructure the fault suite owns, so that it may freeze, stop and restart it.

Never the machine's shared PostgreSQL or another engineer's broker: a tansu broker and a
PostgreSQL cluster of our own, each a process we hold the id of.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from vitals import localinfra


class Broker:
    """A tansu broker (memory storage). Frozen with SIGSTOP, never killed mid-run:
    killing it would lose every message, which is tansu's limit, not the pipeline's."""

    def __init__(self, log_path: Path) -> None:
        self.port = localinfra.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {
            **os.environ,
            "LISTENER_URL": f"tcp://{self.address}",
            "ADVERTISED_LISTENER_URL": f"tcp://{self.address}",
            "RUST_LOG": "warn",
        }
        self.proc = subprocess.Popen(
            [str(localinfra.tansu_binary()), "broker", "--storage-engine", "memory://tansu/"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        localinfra.wait_for_port("127.0.0.1", self.port, 20)

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()  # a stopped process ignores SIGTERM until continued
        localinfra.stop_process(self.proc)
        self._log.close()


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, on a port that survives restarts."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: that is root-only, and postgres runs as its own user.
        self.folder = Path(tempfile.mkdtemp(prefix="vitals-faults-pg-"))
        self.data = self.folder / "data"
        self.port = localinfra.free_port()
        self._bin = localinfra._pg_bindir()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.folder, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()

    @property
    def server_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self._bin / tool), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends sessions and rolls back what is open; `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)

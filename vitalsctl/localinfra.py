"""Local infrastructure for `vitals dev` and the tests, on a machine without Docker.

- Kafka: vitalsctl/localkafka.py (Apache Kafka from Maven Central's jars, or tansu).
- PostgreSQL: a given URL, else the server at 127.0.0.1:5432, else a private cluster
  started from the machine's PostgreSQL binaries in a project-local folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from vitals.errors import InfrastructureError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise InfrastructureError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process, from /proc (Linux); 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# --- PostgreSQL ----------------------------------------------------------------------

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def create_database(server_url: str, dbname: str, *, exist_ok: bool = True) -> str:
    """Create `dbname` on the server; returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists and not exist_ok:
            raise InfrastructureError(f"database {dbname} exists")
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    return with_database(server_url, dbname)


def drop_database(server_url: str, dbname: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if candidates:
        return Path(candidates[0])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise InfrastructureError("no PostgreSQL binaries found (initdb)")


@contextmanager
def postgres_server(url: str | None, folder: Path) -> Iterator[str]:
    """A PostgreSQL server's maintenance URL: `url` when given; else the server at
    127.0.0.1:5432 when one answers; else a private cluster of our own in `folder`,
    stopped on exit. The one rule for `vitals dev`, the benchmarks and the tests."""
    if url:
        yield url
    elif server_answers(LOCAL_SERVER):
        yield LOCAL_SERVER
    else:
        with private_cluster(folder) as private_url:
            yield private_url


def _running_port(bindir: Path, data: Path, prefix: list[str]) -> int | None:
    """The port of the cluster already running in `data`, if one is."""
    status = subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "status"], capture_output=True
    )
    if status.returncode != 0:  # 3: not running; 4: no data directory
        return None
    # postmaster.pid: pid, data directory, start time, port, ... (one a line)
    return int((data / "postmaster.pid").read_text().splitlines()[3])


@contextmanager
def private_cluster(folder: Path) -> Iterator[str]:
    """A PostgreSQL cluster of our own in `folder` (trust auth, loopback, free port)."""
    bindir = pg_bindir()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    # PostgreSQL refuses to run as root; as root, run it as the postgres system user.
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
    if (running := _running_port(bindir, data, prefix)) is not None:
        # Another session's cluster (two test runs in one checkout), or one a killed run
        # left behind: use it, and leave stopping it to whoever started it.
        yield f"postgresql://postgres@127.0.0.1:{running}/postgres"
        return
    port = free_port()
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )

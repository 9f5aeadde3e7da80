"""Child processes for the benchmarks: start, wait until they answer, read their CPU time,
stop them with SIGTERM (then SIGKILL after a grace period)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from vitals.errors import InfrastructureError
from vitalsctl import localinfra, stages

CLK_TCK = os.sysconf("SC_CLK_TCK")


def spawn(
    args: list[str], env: dict[str, str], log: Path, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m <args>` as a child (vitalsctl/stages.py); under `py-spy record` when
    `profile` is given."""
    wrapper: list[str] = []
    if profile is not None:
        # py-spy can only attach to processes it starts here (attaching by pid fails to
        # find the interpreter), so it starts the child and writes folded stacks on exit.
        py_spy = Path(sys.executable).parent / "py-spy"
        wrapper = [str(py_spy), "record", "-r", "200", "-f", "raw", "-o", str(profile), "--"]
    return stages.spawn(args, env, log, wrapper=wrapper)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InfrastructureError(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise InfrastructureError(f"{url} not ready after {timeout:.0f}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: fields[11..12] are utime, stime (clock ticks).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
    return localinfra.stop_process(proc, grace)


def stop_profiled(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int:
    """Stop a child started with a profile: SIGTERM to the profiled process only (py-spy
    dies without writing on a signal of its own); py-spy sees it exit and writes."""
    if proc.poll() is None:
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for pid in children:
            os.kill(int(pid), signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode

"""The pipeline's long-running processes as ops run them, for the tools that start them.

One table of stages (the `vitals` sub-command each runs) and one way to start one as a
child process, shared by `vitals dev`, the benchmarks and the e2e and fault suites; one way
to stop it (SIGTERM, then SIGKILL after a grace period) in vitalsctl/localinfra.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# Stage -> the `vitals` sub-command that runs it.
STAGES: dict[str, tuple[str, ...]] = {
    "gateway": ("gateway",),
    "api": ("api",),
    "processor": ("process",),
    "sink-timescale": ("sink", "timescale"),
    "sink-alerts": ("sink", "alerts"),
    "sink-fhir-notify": ("sink", "fhir-notify"),
    "simulator": ("simulate",),
}
# The data path: what every upload crosses from the gateway to the database and alerts.
PIPELINE = ("gateway", "processor", "sink-timescale", "sink-alerts")
# The consumers: each serves /healthz, /readyz and /metrics on VITALS_PROBE_PORT.
CONSUMERS = ("processor", "sink-timescale", "sink-alerts", "sink-fhir-notify")
# No new input first, then the consumers finish their batch and commit.
STOP_ORDER = (
    "simulator",
    "gateway",
    "api",
    "processor",
    "sink-timescale",
    "sink-alerts",
    "sink-fhir-notify",
)


def kind_of(name: str) -> str:
    """`processor-2` -> `processor`: extra instances run their stage's command."""
    return name if name in STAGES else name.rsplit("-", 1)[0]


def argv(name: str) -> list[str]:
    """`python -m` arguments that run stage `name` (or an extra instance of it)."""
    return ["vitalsctl.cli", *STAGES[kind_of(name)]]


def spawn(
    module_args: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    wrapper: Sequence[str] = (),
    cwd: str | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """`python -m <module_args>` as a child writing to `log`; `wrapper` goes before it
    (a profiler). In a session of its own by default, so that a terminal's Ctrl-C reaches
    the parent only, which stops its children in order."""
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            [*wrapper, sys.executable, "-m", *module_args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=out,
            start_new_session=new_session,
        )
    finally:
        out.close()  # the child has its own copy of the descriptor


def start(name: str, env: dict[str, str], log: Path, **options: object) -> subprocess.Popen[bytes]:
    """Stage `name` as a child process (options as `spawn`)."""
    return spawn(argv(name), env, log, **options)  # type: ignore[arg-type]

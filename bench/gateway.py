"""Gateway scenario: validated, acks=all produced readings/s and latency at fixed
concurrency, against a bare FastAPI endpoint on the same server settings; the gateway with
1 and 2 processes; and the load generator alone against a trivial server, to show it is
not the bottleneck."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import data, procs
from bench.infra import Infra
from bench.report import Row
from bench.stats import Summary, Target
from vitals import contract
from vitals.errors import InfrastructureError
from vitals.kafka import create_topics
from vitals.settings import LOCAL_GATEWAY_TOKEN
from vitalsctl import localinfra, stages


@dataclass(frozen=True, slots=True)
class LoadSpec:
    connections: int
    warmup_s: float
    duration_s: float
    rate: float = 0.0  # requests/s; 0 = closed loop


def write_bodies(path: Path, count: int, patients: int) -> Path:
    uploads = data.fleet_uploads(count, patients, contract.now_ms())
    path.write_bytes(orjson.dumps([data.wire_body(u) for u in uploads]))
    return path


def run_load(targets: list[int], bodies: Path, spec: LoadSpec) -> dict[str, object]:
    """One load-generator process against 127.0.0.1:<targets>; its JSON result."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--targets",
        ",".join(f"127.0.0.1:{p}" for p in targets),
        "--header",
        f"Authorization: Bearer {LOCAL_GATEWAY_TOKEN}",
        "--header",
        "Content-Type: application/json",
        "--bodies",
        str(bodies),
        "--connections",
        str(spec.connections),
        "--warmup",
        str(spec.warmup_s),
        "--duration",
        str(spec.duration_s),
        "--rate",
        str(spec.rate),
    ]
    done = subprocess.run(
        command, capture_output=True, timeout=spec.warmup_s + spec.duration_s + 60
    )
    if done.returncode != 0:
        raise InfrastructureError(f"load generator failed: {done.stderr.decode()[-2000:]}")
    return orjson.loads(done.stdout.splitlines()[-1])


def accepted_per_s(result: dict[str, object]) -> float:
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    return statuses.get("202", 0) / float(result["answered"] or 1) * float(result["per_s"])


def profile(infra: Infra, spec: LoadSpec, out: Path) -> Path:
    """One gateway under py-spy at the scenario's load; the folded stacks' path."""
    settings = infra.settings("gwprof")
    asyncio.run(create_topics(settings))
    bodies = write_bodies(infra.logs / "gateway-bodies.json", 256, 256)
    port = localinfra.free_port()
    env = {**infra.env(settings), "VITALS_GATEWAY_PORT": str(port)}
    proc = procs.spawn(stages.argv("gateway"), env, infra.logs / "gateway-prof.log", out)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/readyz", 30, proc)
        run_load([port], bodies, spec)
    finally:
        procs.stop_profiled(proc)
    return out


def run(infra: Infra, reps: int, spec: LoadSpec, notes: list[str]) -> list[Row]:
    settings = infra.settings("gw")
    asyncio.run(create_topics(settings))
    bodies = write_bodies(infra.logs / "gateway-bodies.json", 256, 256)
    env = infra.env(settings)
    gw_ports = [localinfra.free_port(), localinfra.free_port()]
    bare_port, trivial_port = localinfra.free_port(), localinfra.free_port()
    started = []
    try:
        for i, port in enumerate(gw_ports):
            started.append(
                procs.spawn(
                    stages.argv("gateway"),
                    {**env, "VITALS_GATEWAY_PORT": str(port)},
                    infra.logs / f"gateway-{i}.log",
                )
            )
        started.append(
            procs.spawn(
                ["bench.servers", "bare", "--port", str(bare_port)],
                env,
                infra.logs / "bare.log",
            )
        )
        started.append(
            procs.spawn(
                ["bench.servers", "trivial", "--port", str(trivial_port)],
                env,
                infra.logs / "trivial.log",
            )
        )
        for port, proc in zip(gw_ports, started, strict=False):
            procs.wait_http(f"http://127.0.0.1:{port}/readyz", 30, proc)
        procs.wait_http(f"http://127.0.0.1:{bare_port}/readyz", 30, started[2])
        localinfra.wait_for_port("127.0.0.1", trivial_port, 10)
        pids = {"gateway": started[0].pid, "bare": started[2].pid}
        return _measure(reps, spec, bodies, gw_ports, bare_port, trivial_port, pids, notes)
    finally:
        for proc in started:
            procs.stop(proc)


def _measure(
    reps: int,
    spec: LoadSpec,
    bodies: Path,
    gw_ports: list[int],
    bare_port: int,
    trivial_port: int,
    pids: dict[str, int],
    notes: list[str],
) -> list[Row]:
    sides = {
        "gateway": [gw_ports[0]],
        "bare": [bare_port],
        "gateway x2": gw_ports,
        "trivial": [trivial_port],
    }
    results: dict[str, list[dict[str, object]]] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(reps):
        # Alternate the order so that drift in the machine's load does not favour one side.
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            pid = pids.get(name)
            cpu_before = procs.cpu_seconds(pid) if pid else 0.0
            result = run_load(sides[name], bodies, spec)
            if pid:
                # The server's CPU per request (warm-up included, at the measured rate):
                # what a request costs, which other work on the machine hardly moves.
                requests = float(result["per_s"]) * (spec.warmup_s + spec.duration_s)  # type: ignore[arg-type]
                result["cpu_us"] = (procs.cpu_seconds(pid) - cpu_before) / max(1.0, requests) * 1e6
            results[name].append(result)
    per = data.READINGS_PER_UPLOAD

    def summary(name: str, key: str, scale: float = 1.0) -> Summary:
        if key == "accepted":
            return Summary(tuple(accepted_per_s(r) * scale for r in results[name]))
        return Summary(tuple(float(r[key]) * scale for r in results[name]))  # type: ignore[arg-type]

    for name, runs in results.items():
        statuses: dict[str, int] = {}
        for r in runs:
            for code, n in r["statuses"].items():  # type: ignore[union-attr]
                statuses[code] = statuses.get(code, 0) + n
        if set(statuses) - {"202"}:
            notes.append(f"gateway scenario: {name} answered {statuses} (only 202s count)")
    gen_share = max(
        float(r["cpu_share"])  # type: ignore[arg-type]
        for name in ("gateway", "bare", "gateway x2")
        for r in results[name]
    )
    conc = f"{spec.connections} connections, {per} readings per upload"
    return [
        Row(
            "gateway",
            "accepted readings/s",
            "readings/s",
            summary("gateway", "accepted", per),
            summary("bare", "accepted", per),
            "bare FastAPI",
            Target("ratio_at_least", 0.6),
            f"{conc}; validation + acks=all produce vs read body and answer",
        ),
        Row(
            "gateway",
            "p50 latency",
            "ms",
            summary("gateway", "p50_ms"),
            summary("bare", "p50_ms"),
            "bare FastAPI",
        ),
        Row(
            "gateway",
            "p99 latency",
            "ms",
            summary("gateway", "p99_ms"),
            summary("bare", "p99_ms"),
            "bare FastAPI",
        ),
        Row(
            "gateway",
            "server CPU per upload",
            "µs",
            summary("gateway", "cpu_us"),
            summary("bare", "cpu_us"),
            "bare FastAPI",
            note="the server process's user + system time per request (/proc), broker excluded",
        ),
        Row(
            "scale-out",
            "gateway readings/s, 2 processes vs 1",
            "readings/s",
            summary("gateway x2", "accepted", per),
            summary("gateway", "accepted", per),
            "1 process",
            note="two `vitals gateway` processes, connections split between them",
        ),
        Row(
            "load generator",
            "requests/s against a trivial server",
            "req/s",
            summary("trivial", "per_s"),
            summary("gateway", "per_s"),
            "gateway req/s",
            note=(
                "how far above the gateway the generator alone goes; its highest CPU share "
                f"of one core in any gateway-scenario run: {gen_share:.0%}"
            ),
        ),
    ]

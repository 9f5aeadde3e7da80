"""The benchmark load generator against a real server over TCP: it counts what it got,
and in open loop it offers the rate it was asked for (the e2e scenario relies on that)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench import gateway, procs
from bench.__main__ import main as bench_main
from vitals.errors import InfrastructureError
from vitalsctl import localinfra


def test_load_generator_closed_and_open_loop(tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.json"
    bodies.write_bytes(orjson.dumps(['{"a":1}', '{"b":2}']))
    port = localinfra.free_port()
    server = procs.spawn(
        ["bench.servers", "trivial", "--port", str(port)], {}, tmp_path / "server.log"
    )
    try:
        localinfra.wait_for_port("127.0.0.1", port, 10)
        closed = gateway.run_load([port], bodies, gateway.LoadSpec(4, 0.2, 1.0))
        assert closed["answered"] > 1_000  # a trivial server answers thousands a second
        assert closed["statuses"] == {"202": closed["answered"]}
        assert closed["p50_ms"] <= closed["p99_ms"]
        assert 0 < closed["cpu_share"] <= 1.1
        opened = gateway.run_load([port], bodies, gateway.LoadSpec(4, 0.2, 1.0, rate=200))
        assert 180 <= opened["answered"] <= 220
        assert opened["backlog_at_end"] == 0
    finally:
        procs.stop(server)


def test_harness_says_when_a_server_dies_or_nothing_listens(tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.json"
    bodies.write_bytes(orjson.dumps(["{}"]))
    port = localinfra.free_port()
    with pytest.raises(InfrastructureError, match="load generator failed"):
        gateway.run_load([port], bodies, gateway.LoadSpec(1, 0.0, 0.2))
    # A server that exits at once (bad arguments) is reported, not waited for.
    dead = procs.spawn(["bench.servers", "nonsense"], {}, tmp_path / "dead.log")
    with pytest.raises(InfrastructureError, match="exited with 2"):
        procs.wait_http(f"http://127.0.0.1:{port}/readyz", 10, dead)


def test_bench_refuses_zero_repetitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--reps", "0"]) == 2
    assert "--reps must be at least 1" in capsys.readouterr().err

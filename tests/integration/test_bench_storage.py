"""`python -m bench --only storage export` end to end on tiny sizes: real PostgreSQL, the
TimescaleDB engine in WASM, `vitals export` child processes. Checks what the scenarios
write, never how fast anything was."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from bench import export, storage
from bench.infra import Infra

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_storage_and_export_scenarios_write_their_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "storage",
            "export",
            "--reps",
            "1",
            "--storage-rows",
            "8000",
            "--export-rows",
            "100",
            "300",
            "--out",
            str(tmp_path),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # its logs go to .local/bench under the working directory
        # The harness runs from the checkout (it is not installed): put it on the path.
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Named for its scenarios: it never replaces make bench's latest-full.
    assert {p.name for p in tmp_path.glob("latest-*")} == {
        "latest-full-export-storage.json",
        "latest-full-export-storage.md",
    }
    doc = orjson.loads((tmp_path / "latest-full-export-storage.json").read_bytes())
    rows = {(r["scenario"], r["measure"]): r for r in doc["rows"]}

    load = rows[("storage", "rows/s loading 8,000 readings")]
    assert load["peer_name"] == "raw COPY" and load["project"]["median"] > 0
    on_disk = rows[("storage", "bytes per reading on disk (PostgreSQL)")]
    assert 100 < on_disk["project"]["median"] < 1_000  # a reading with its key: ~225 B
    # PostgreSQL here has no TimescaleDB: compression is measured on the WASM engine.
    wasm = "bytes per reading compressed (TimescaleDB 2.23 in WASM (PGlite), 8,000 readings)"
    compressed = rows[("storage", wasm)]
    assert compressed["peer_name"] == "uncompressed"
    assert 0 < compressed["ratio"] < 1

    for fmt in ("csv", "parquet"):
        small = rows[("export", f"peak RSS of `vitals export --format {fmt}`, 100 readings")]
        large = rows[("export", f"peak RSS of `vitals export --format {fmt}`, 300 readings")]
        assert small["project"]["median"] > 10  # MB: a Python process, measured
        assert large["peer"]["median"] == small["project"]["median"]
    assert "export" in done.stdout and "storage" in done.stdout  # the printed table


def test_export_measure_fails_with_the_log_when_the_command_fails(tmp_path: Path) -> None:
    nowhere = Infra("127.0.0.1:1", "postgresql://postgres@127.0.0.1:1/none", tmp_path)
    span = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    with pytest.raises(RuntimeError, match="export-csv.log"):
        export.measure(nowhere, "csv", ["p-00000"], span, tmp_path / "x.csv")
    assert "database unreachable" in (tmp_path / "export-csv.log").read_text()
    assert not (tmp_path / "x.csv").exists()


def test_compression_is_reported_missing_without_the_engine_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = "tests/support/timescale/no-such-client.py"
    monkeypatch.setattr(storage, "ENGINE_CLIENT", missing)
    out = storage.Measured()
    asyncio.run(storage.compress_on_wasm(out, 100, 1_795_000_000_000))
    assert out.compressed is None
    assert out.notes == [f"compression not measured: no {missing} (run from a checkout)"]

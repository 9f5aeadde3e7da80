"""`vitals export` on a real PostgreSQL: pseudonyms, filters, formats, refusals.

Readings go in through the sink's writer. The export runs in this process (export()) for
the content checks, and as the real command (a subprocess) for the refusals.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq
import pytest

from sinks.timescale.writer import copy_then_upsert
from tests.support.readapi import row
from tests.support.terminal import on_pty
from vitals.errors import ConfigError
from vitalsctl.export import command
from vitalsctl.export.pseudonym import Pseudonymiser

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, tzinfo=UTC)
KEY_A, KEY_B = "research-key-a-0123456789", "research-key-b-0123456789"


@pytest.fixture(scope="module")
async def cohort(database_url: str) -> list[str]:
    """Three patients with readings from two devices, and one patient outside the cohort."""
    tag = uuid.uuid4().hex[:6]
    patients = [f"p-{tag}-{i}" for i in range(3)]
    rows = [
        row(p, metric, T0 + timedelta(minutes=m), 60.0 + m, device=f"dev-{tag}-{m % 2}")
        for p in [*patients, f"p-{tag}-outside"]
        for metric in ("heart_rate", "spo2")
        for m in range(40)
    ]
    conn = await asyncpg.connect(database_url)
    try:
        await copy_then_upsert(conn, rows)
    finally:
        await conn.close()
    return patients


async def run_export(
    database_url: str, key: str, cohort: list[str], out: Path, fmt: str = "csv", **kw: object
) -> list[dict[str, str]]:
    await command.export(
        database_url, Pseudonymiser(key), cohort, kw.get("start", T0),  # type: ignore[arg-type]
        kw.get("end", T0 + timedelta(minutes=30)), kw.get("metrics"), fmt, out,  # type: ignore[arg-type]
    )  # fmt: skip
    if fmt == "parquet":
        table = pq.read_table(out).to_pylist()
        return [{k: str(v) if k != "t" else v.isoformat() for k, v in r.items()} for r in table]
    with out.open(newline="") as f:
        return list(csv.DictReader(f))


async def test_pseudonyms_are_keyed_stable_and_hide_every_identifier(
    database_url: str, cohort: list[str], tmp_path: Path
) -> None:
    a1 = await run_export(database_url, KEY_A, cohort, tmp_path / "a1.csv")
    await run_export(database_url, KEY_A, cohort, tmp_path / "a2.csv")
    b = await run_export(database_url, KEY_B, cohort, tmp_path / "b.csv")
    assert (tmp_path / "a1.csv").read_bytes() == (tmp_path / "a2.csv").read_bytes()
    subjects_a = {r["subject"] for r in a1}
    subjects_b = {r["subject"] for r in b}
    assert len(subjects_a) == len(subjects_b) == 3
    assert not subjects_a & subjects_b  # another key: unrelated pseudonyms
    assert len({r["source"] for r in a1}) == 2  # devices pseudonymised, still told apart
    text = (tmp_path / "a1.csv").read_text()
    tag = cohort[0].split("-")[1]
    assert tag not in text and "p-" not in text and "dev-" not in text
    # Same key, one patient alone: the same pseudonym as in the whole cohort's export.
    alone = await run_export(database_url, KEY_A, cohort[:1], tmp_path / "one.csv")
    assert {r["subject"] for r in alone} < subjects_a


async def test_rows_range_and_metrics(database_url: str, cohort: list[str], tmp_path: Path) -> None:
    rows = await run_export(
        database_url, KEY_A, cohort, tmp_path / "r.csv", metrics=["spo2"],
        start=T0 + timedelta(minutes=10), end=T0 + timedelta(minutes=13),
    )  # fmt: skip
    assert list(rows[0]) == ["subject", "metric", "t", "value", "unit", "source"]
    assert len(rows) == 3 * 3  # 3 patients x minutes 10, 11, 12
    assert {r["metric"] for r in rows} == {"spo2"} and {r["unit"] for r in rows} == {"%"}
    first = rows[0]
    assert first["t"] == "2026-04-01T00:10:00+00:00" and first["value"] == "70.0"


async def test_parquet_holds_what_csv_holds(
    database_url: str, cohort: list[str], tmp_path: Path
) -> None:
    as_csv = await run_export(database_url, KEY_A, cohort, tmp_path / "x.csv")
    as_parquet = await run_export(database_url, KEY_A, cohort, tmp_path / "x.parquet", "parquet")
    assert len(as_parquet) == 3 * 2 * 30
    assert as_parquet == as_csv
    assert not (tmp_path / "x.parquet.partial").exists()


async def test_batches_stream_every_row_in_key_order(
    database_url: str, cohort: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = await run_export(database_url, KEY_A, cohort, tmp_path / "whole.csv")
    monkeypatch.setattr(command, "BATCH_ROWS", 7)  # many batches, a short last one
    for fmt in ("csv", "parquet"):
        batched = await run_export(database_url, KEY_A, cohort, tmp_path / f"b.{fmt}", fmt)
        assert batched == whole, fmt
    pq_file = pq.ParquetFile(tmp_path / "b.parquet")
    assert pq_file.metadata.num_row_groups == -(-len(whole) // 7)  # one per batch


def test_the_key_is_required() -> None:
    for key in ("", "short"):
        with pytest.raises(ConfigError, match="VITALS_EXPORT_PSEUDONYM_KEY"):
            Pseudonymiser(key)


def vitals_export(database_url: str, *args: str, key: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    if key is not None:
        env["VITALS_EXPORT_PSEUDONYM_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", "--database-url", database_url, "export", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_command_refuses_bad_input_and_writes_nothing(
    database_url: str, cohort: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    window = ["--from", "2026-04-01T00:00:00Z", "--to", "2026-04-01T01:00:00Z"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n\n")
    cases = [
        (["--patients", cohort[0], *window], None, "VITALS_EXPORT_PSEUDONYM_KEY"),
        (["--cohort", str(empty), *window], KEY_A, "the cohort is empty"),
        (["--cohort", str(tmp_path / "missing.txt"), *window], KEY_A, "cannot read"),
        (["--patients", cohort[0], "--from", "2026-04-01T01:00:00Z", "--to",
          "2026-04-01T00:00:00Z"], KEY_A, "--from must be before --to"),
        (["--patients", "x" * 129, *window], KEY_A, "longer than 128"),
    ]  # fmt: skip
    for args, key, message in cases:
        done = vitals_export(database_url, *args, "--out", str(out), key=key)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert not out.exists()
    naive = vitals_export(
        database_url, "--patients", "p", "--from", "2026-04-01", "--to", "2026-04-02",
        "--out", str(out), key=KEY_A,
    )  # fmt: skip
    assert naive.returncode == 2 and "needs an offset" in naive.stderr


def test_the_command_exports_a_cohort_file(
    database_url: str, cohort: list[str], tmp_path: Path
) -> None:
    listing = tmp_path / "cohort.txt"
    listing.write_text(f"# study 7\n{cohort[0]}\n{cohort[1]}  # second\n{cohort[0]}\n")
    out = tmp_path / "out.csv"
    done = vitals_export(
        database_url, "--cohort", str(listing), "--from", "2026-04-01T00:00:00Z",
        "--to", "2026-04-01T00:05:00+00:00", "--out", str(out), key=KEY_A,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exported 20 readings of 2 of 2 patients" in done.stderr
    assert "\r" not in done.stderr and "100%" not in done.stderr  # no bar off a terminal
    assert cohort[0] not in done.stderr + done.stdout
    with out.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 20


def test_the_command_shows_rows_done_rate_and_time_left_on_a_terminal(
    database_url: str, cohort: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env["VITALS_EXPORT_PSEUDONYM_KEY"] = KEY_A
    code, screen = on_pty(
        sys.executable, "-m", "vitalsctl.cli", "--database-url", database_url, "export",
        "--patients", f"{cohort[0]},{cohort[1]}", "--from", "2026-04-01T00:00:00Z",
        "--to", "2026-04-01T00:05:00Z", "--out", str(tmp_path / "out.csv"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, screen
    # The total counted first (on a terminal only), so the bar knows the time left.
    assert "export: 100%" in screen and "20/20" in screen and "rows/s]" in screen, screen

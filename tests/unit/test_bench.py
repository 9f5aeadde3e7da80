"""The benchmark harness's own arithmetic and reporting (bench): the figures it
writes under bench/results/ must mean what the table says."""

from __future__ import annotations

import math

import orjson
import pytest

from bench import data, loadgen, machine, profile, sink
from bench.__main__ import main as bench_main
from bench.report import Results, Row
from bench.stats import Summary, Target, median, percentile, ratio
from sinks.timescale.rows import rows_of


def test_percentile_is_nearest_rank_of_observed_values() -> None:
    values = list(range(100, 0, -1))  # unsorted on purpose
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0  # few samples: p99 is the worst seen


@pytest.mark.parametrize("values,q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_median_and_spread() -> None:
    assert median([5.0, 1.0, 3.0]) == 3.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    s = Summary((90.0, 100.0, 120.0))
    assert s.median == 100.0
    assert s.spread_pct == pytest.approx(30.0)
    assert Summary((0.0, 0.0)).spread_pct == 0.0
    with pytest.raises(ValueError):
        median([])


def test_ratio_and_targets() -> None:
    assert ratio(60.0, 100.0) == pytest.approx(0.6)
    assert math.isinf(ratio(1.0, 0.0))
    at_least = Target("ratio_at_least", 0.6)
    assert at_least.met(0.0, 0.6) and not at_least.met(0.0, 0.59)
    assert at_least.describe("readings/s") == "≥ 60% of peer"
    assert Target("ratio_at_least", 10).describe("x") == "≥ 10× peer"
    below = Target("below", 500)
    assert below.met(499.0, None) and not below.met(500.0, None)
    assert below.describe("ms") == "< 500 ms"
    with pytest.raises(ValueError):
        at_least.met(1.0, None)  # a ratio target without a peer is a harness bug
    with pytest.raises(ValueError):
        Target("above", 1)


def _results() -> Results:
    results = Results({"date": "2026-11-23T00:00:00+00:00", "cores": 2, "shared": True}, "quick")
    results.rows = [
        Row(
            "gateway",
            "accepted readings/s",
            "readings/s",
            Summary((50.0, 70.0, 60.0)),
            Summary((100.0, 100.0, 100.0)),
            "bare FastAPI",
            Target("ratio_at_least", 0.6),
            "32 connections",
        ),
        Row("end to end", "POST → alert p99", "ms", Summary((600.0,)), target=Target("below", 500)),
    ]
    results.notes.append("machine busy")
    results.profiles["gateway: self time"] = [("validate_upload (ingest/validation.py)", 12.5)]
    return results


def test_rows_report_median_ratio_and_verdict() -> None:
    gateway, e2e = (row.as_dict() for row in _results().rows)
    assert gateway["project"] == {"median": 60.0, "spread_pct": 33.3, "runs": [50.0, 70.0, 60.0]}
    assert gateway["ratio"] == 0.6
    assert gateway["target_met"] is True
    assert e2e["peer"] is None and e2e["ratio"] is None
    assert e2e["target_met"] is False


def test_table_markdown_and_files_agree(tmp_path) -> None:
    results = _results()
    table = results.table()
    assert (
        "| gateway | accepted readings/s (readings/s) | 60.0 ±33% | bare FastAPI: 100 ±0% " in table
    )
    assert "| 0.60 | ≥ 60% of peer | yes |" in table
    assert "| < 500 ms | **no** |" in table
    json_path, md_path = results.write(tmp_path, "run")
    doc = orjson.loads(json_path.read_bytes())
    assert doc["mode"] == "quick" and doc["machine"]["shared"] is True
    assert [r["target_met"] for r in doc["rows"]] == [True, False]
    assert doc["profiles"]["gateway: self time"][0]["share_pct"] == 12.5
    markdown = md_path.read_text()
    assert table in markdown
    assert "shared with other work: yes" in markdown and "- machine busy" in markdown


FOLDED = (
    "process 1:python;main (vitalsctl/cli.py:10);feed (processors/engine.py:5);"
    "insert (processors/windows.py:7) 6\n"
    "process 1:python;main (vitalsctl/cli.py:10);feed (processors/engine.py:9) 2\n"
    "process 1:python;main (vitalsctl/cli.py:11);select (/usr/lib/python3.11/selectors.py:1) 2\n"
)


def test_profile_shares_and_compaction() -> None:
    total, inclusive, own = profile.summarise(FOLDED)
    assert total == 10
    assert inclusive["feed (processors/engine.py)"] == 8  # both lines, counted once each
    assert own["insert (processors/windows.py)"] == 6
    assert profile.top(FOLDED, 1) == [("insert (processors/windows.py)", 60.0)]
    assert profile.top(FOLDED, 1, by="inclusive") == [("main (vitalsctl/cli.py)", 100.0)]
    assert profile.frame_name("f (/x/site-packages/aiokafka/c.py:3)") == "f (aiokafka/c.py)"
    compact = profile.compact(FOLDED)
    # Stacks that differ only by line number merge; counts are kept.
    assert "main (vitalsctl/cli.py);feed (processors/engine.py) 2" in compact
    assert sum(int(line.rsplit(" ", 1)[1]) for line in compact.splitlines()) == 10


def test_shared_machine_threshold() -> None:
    assert machine.shared(0.5, 2) is True
    assert machine.shared(0.4, 2) is False
    described = machine.describe()
    assert {"date", "cores", "memory_gib", "cpu_model", "python"} <= set(described)


def test_load_generator_parses_split_and_pipelined_answers() -> None:
    gen = loadgen.Generator([b""], rate=0.0, warmup_s=-10.0, duration_s=3600.0)
    gen.stopping = True  # record answers only; send nothing further
    conn = loadgen.Connection(gen)
    ok = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"
    problem = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nretry-after: 5\r\n\r\nbusy"
    conn.started = gen.measure_from
    for chunk in (ok[:10], ok[10:30], ok[30:] + problem[:5], problem[5:]):
        conn.data_received(chunk)
    assert gen.statuses == {202: 1, 503: 1}
    conn.data_received(ok + ok)  # two answers in one read
    assert gen.statuses[202] == 3
    assert len(gen.latencies) == 4 and not conn.buf


def test_fleet_rows_are_the_fleet_uploads_rows_in_batches() -> None:
    uploads = data.fleet_uploads(7, 3, 1_795_000_000_000)
    expected = [row for upload in uploads for row in rows_of(upload)]
    batches = list(data.fleet_rows(7 * 50 + 20, 3, 1_795_000_000_000, batch=120))
    assert [len(b) for b in batches] == [120, 120, 110]  # whole uploads only: 350 rows
    assert [row for batch in batches for row in batch] == expected


def test_redelivered_batches_repeat_one_upload_of_the_batch_before() -> None:
    batches = [[("a", i) for i in range(60)], [("b", i) for i in range(60)], [("c", 0)]]
    out = sink.redelivered(batches)  # type: ignore[arg-type]
    assert out[0] == batches[0]
    assert out[1] == batches[1] + batches[0][:50]
    assert out[2] == batches[2] + batches[1][:50]
    assert len({row for batch in out for row in batch}) == 121  # nothing new: repeats only


def test_bench_refuses_fewer_rows_than_one_upload(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--only", "storage", "--storage-rows", "49"]) == 2
    assert bench_main(["--only", "storage", "--storage-rows", "0"]) == 2
    assert bench_main(["--only", "export", "--export-rows", "100", "10"]) == 2
    assert "must be at least 50" in capsys.readouterr().err


def test_the_rebalance_gap_is_the_longest_time_the_commits_did_not_move() -> None:
    from bench.rebalance import longest_gap

    # (time, committed total): moving at 1, 2, then stuck from 2 to 6.5, moving again.
    samples = [(0.0, 0), (1.0, 5), (2.0, 9), (4.0, 9), (6.5, 12), (7.0, 15)]
    assert longest_gap(samples, 0.0, 7.0) == 4.5
    assert longest_gap(samples, 0.0, 2.0) == 1.0  # the window clips the gap
    assert longest_gap([(0.0, 3), (5.0, 3)], 0.0, 5.0) == 5.0  # never moved


def test_the_restart_table_sets_the_designs_side_by_side_with_their_ratio() -> None:
    from bench.restart import table

    rows = [
        {"design": "checkpointed", "rss_mb": 200.0, "restart_to_ready_s": 3.0},
        {"design": "replay-only", "rss_mb": None, "restart_to_ready_s": 60.0},
    ]
    text = table(rows, 1000, 4_800_000, "1.0 2.0 3.0")
    assert "| measure | checkpointed | replay-only | ÷ replay-only |" in text
    assert "| restart_to_ready_s | 3.0 | 60.0 | 0.050 |" in text
    assert "| rss_mb | 200.0 | – | – |" in text  # not measured for the peer: no ratio
    assert text.startswith("1,000 patients, 4,800,000 readings in the history, 6 partitions")


def test_the_restart_table_gives_quix_its_columns_and_keeps_a_failed_design_in_view() -> None:
    from bench.restart import table

    rows = [
        {"design": "checkpointed", "restart_to_ready_s": 3.0, "restart_to_detection_s": 3.1},
        {"design": "replay-only", "error": "no detection 900 s after restart"},
        {"design": "quix, state kept", "restart_to_ready_s": 2.0},
        {"design": "quix, new pod", "restart_to_ready_s": 30.0, "changelog_records": 12_000},
    ]
    text = table(rows, 1000, 1, "0")
    header = "| measure | checkpointed | replay-only | quix, state kept | quix, new pod "
    assert header + "| ÷ replay-only | ÷ quix, new pod |" in text
    assert "| restart_to_ready_s | 3.0 | – | 2.0 | 30.0 | – | 0.100 |" in text
    assert "| error | – | no detection 900 s after restart | – | – | – | – |" in text
    assert "| changelog_records | – | – | – | 12,000 | – | – |" in text


def test_the_restart_report_rows_compare_with_each_peer_and_leave_out_what_failed() -> None:
    from bench.restart import report_rows

    rows = [
        {"design": "checkpointed", "restart_to_ready_s": 3.0, "restart_to_detection_s": 3.5,
         "exit_after_sigterm_s": 2.0, "rss_mb": 200.0},
        {"design": "replay-only", "error": "the processor exited"},
        {"design": "quix, state kept", "restart_to_ready_s": 1.5, "exit_after_sigterm_s": 4.0},
        {"design": "quix, new pod", "restart_to_ready_s": 60.0},
    ]  # fmt: skip
    found = {r.measure: r for r in report_rows(rows, patients=1000)}
    live = found["restart → every partition live"]
    assert live.peer is None and live.target_met is True  # 3 s, below the 10 s asked
    assert found["restart → every partition live, vs Quix Streams in a new pod"].ratio == 0.05
    assert found["restart → every partition live, vs Quix Streams with its state kept"].ratio == 2
    assert found["SIGTERM → process gone"].ratio == 0.5
    assert round(found["processor RSS per patient, live"].project.median, 1) == 204.8
    assert report_rows([{"design": "checkpointed", "error": "x"}], patients=10) == []

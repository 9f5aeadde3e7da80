"""The harness's own error paths and its report: no infrastructure needed."""

from __future__ import annotations

import pytest

from tests.faults import report, soak
from tests.faults.checks import Verdict, _judge
from tests.faults.load import NO_ANSWER, Ledger, Upload


@pytest.mark.parametrize(
    "argv",
    [["--minutes", "0"], ["--minutes", "121"], ["--patients", "0"], ["--interval", "-1"]],
)
def test_soak_refuses_unbounded_or_empty_runs(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        soak.arguments(argv)
    assert exit_info.value.code == 2


def _upload(patient: str, attempts: list[int], t: int) -> Upload:
    u = Upload(patient, 0, b"", [("spo2", t)], [])
    u.attempts = attempts
    return u


def test_ledger_judges_lost_duplicated_unknown_and_refused() -> None:
    from collections import Counter

    ledger = Ledger("p-x-")
    ledger.uploads = [
        _upload("p-x-1", [503, 202], 1),  # accepted after a retry, stored: fine
        _upload("p-x-1", [202], 2),  # accepted, missing: lost
        _upload("p-x-1", [NO_ANSWER], 3),  # unknown, stored once: fine
        _upload("p-x-1", [422], 4),  # refused, stored: broken
    ]
    stored = Counter({("p-x-1", "spo2", 1): 1, ("p-x-1", "spo2", 3): 2, ("p-x-1", "spo2", 4): 1})
    v = Verdict("t", "", "", recovery_s=1.0)
    _judge(v, ledger, stored, Counter(), set(), {})
    assert (v.readings_accepted, v.readings_stored, v.readings_lost) == (2, 1, 1)
    assert (v.uploads_unknown, v.unknown_landed, v.readings_duplicated) == (1, 1, 1)
    assert v.refused_stored == 1
    assert len(v.problems) == 3  # lost, duplicated, refused stored
    assert "BROKEN" in report.row(v.as_dict())

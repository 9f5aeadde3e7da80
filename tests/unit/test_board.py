"""The board's call-first order (readapi/board.py), without HTTP or a database."""

from __future__ import annotations

from typing import Any

from readapi.board import call_first


def _patient(pid: str, *alerts: dict[str, Any], age: float | None = 30) -> dict[str, Any]:
    return {"patient_id": pid, "alerts": list(alerts), "last_data_age_s": age}


def _alert(severity: str, *, ack: str | None = None, level: int = 0, open_s: float = 60):
    return {"severity": severity, "acknowledged_by": ack, "escalation_level": level,
            "open_s": open_s}  # fmt: skip


def test_unacknowledged_severe_escalated_long_open_first_then_the_stalest_data() -> None:
    board = [
        _patient("quiet"),
        _patient("silent", age=None),
        _patient("stale", age=4000),
        _patient("acked-high", _alert("high", ack="nurse")),
        _patient("low", _alert("low", open_s=9999)),
        _patient("high-new", _alert("high", open_s=10)),
        _patient("high-escalated", _alert("high", level=1, open_s=5)),
        _patient("medium", _alert("medium"), _alert("low")),
    ]

    order = [p["patient_id"] for p in sorted(board, key=call_first)]

    assert order == [
        "high-escalated", "high-new", "medium", "low", "acked-high", "silent", "stale", "quiet",
    ]  # fmt: skip

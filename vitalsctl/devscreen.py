"""What `vitals dev` prints between its start and its stop: the figures, and the warnings.

Pure functions over the front doors' Prometheus text, so that what the screen says is
tested without a pipeline: a rate is never negative (a failed read or a restarted gateway
shows `n/a`, and the next good read measures from the last good one), every rejection is
counted by its code, and a registry that stopped reloading or a front door answering 5xx
each print a line once, when they start and when they end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

LEGEND = (
    "every 10 s: readings accepted and rejected per second at the gateway since the last "
    "line, and the rows stored in the readings table"
)
GLITCHES = (
    "rejected readings are refused one by one, the rest of their upload still accepted: the "
    "simulator sends an impossible SpO2 of 0 % now and then on purpose (a loose probe; "
    "`vitals simulate --glitch-rate`), answered `out_of_range` (docs/wire-format.md)"
)


@dataclass
class Sample:
    """One read of a front door's /metrics."""

    at: float  # monotonic seconds
    accepted: float = 0.0
    rejected: dict[str, float] = field(default_factory=dict)  # by code
    server_errors: dict[tuple[str, str], float] = field(default_factory=dict)  # (route, status)
    registry_age_s: dict[str, float] = field(default_factory=dict)  # by registry
    task_failures: dict[str, float] = field(default_factory=dict)  # by background task

    @property
    def rejected_total(self) -> float:
        return sum(self.rejected.values())


def parse(text: str, at: float) -> Sample:
    sample = Sample(at)
    samples = (s for family in text_string_to_metric_families(text) for s in family.samples)
    for name, labels, number in ((s.name, s.labels, s.value) for s in samples):
        if name == "vitals_gateway_readings_accepted_total":
            sample.accepted += number
        elif name == "vitals_gateway_readings_rejected_total":
            code = labels.get("code", "?")
            sample.rejected[code] = sample.rejected.get(code, 0.0) + number
        elif name.endswith("_requests_total") and labels.get("status", "").startswith("5"):
            sample.server_errors[(labels.get("route", "?"), labels["status"])] = number
        elif name == "vitals_registry_age_seconds":
            sample.registry_age_s[labels.get("registry", "?")] = number
        elif name == "vitals_background_task_failures_total":
            sample.task_failures[labels.get("task", "?")] = number
    return sample


def _rate(now: float, before: float, span: float, width: int, decimals: int) -> str:
    if span <= 0 or now < before:  # a restarted gateway counts from 0 again
        return f"{'n/a':>{width}}"
    return f"{(now - before) / span:{width}.{decimals}f}"


def summary(current: Sample | None, previous: Sample, rows: int | None, why_not: str = "") -> str:
    """The line printed every 10 s; `current` None when the gateway's metrics could not be
    read (`why_not` says why)."""
    stored = "n/a" if rows is None else f"{rows:,}"
    if current is None:
        return (
            f"accepted {'n/a':>7}/s  rejected {'n/a':>5}/s  stored {stored:>9} rows"
            f"  (gateway metrics unreadable: {why_not or 'no answer'})"
        )
    span = current.at - previous.at
    accepted = _rate(current.accepted, previous.accepted, span, 7, 0)
    rejected = _rate(current.rejected_total, previous.rejected_total, span, 5, 1)
    by_code = ", ".join(f"{code} {n:,.0f}" for code, n in sorted(current.rejected.items()))
    return (
        f"accepted {accepted}/s  rejected {rejected}/s  stored {stored:>9} rows"
        f"  (since start: accepted {current.accepted:,.0f}, rejected "
        f"{current.rejected_total:,.0f}{f': {by_code}' if by_code else ''})"
    )


def warnings(
    door: str, current: Sample, previous: Sample | None, age_bound_s: float, stale: set[str]
) -> list[str]:
    """Lines about `door` (gateway, api) worth a person's attention since `previous`:
    new 5xx answers, background tasks that failed, a registry past its age bound (once,
    and once when it is fresh again; `stale` remembers which are)."""
    lines: list[str] = []
    log = f".local/logs/{door}.log"
    for (route, status), count in sorted(current.server_errors.items()):
        new = count - (previous.server_errors.get((route, status), 0.0) if previous else 0.0)
        if new > 0:
            lines.append(
                f"WARNING {door} answered {status} {new:,.0f}× on {route}: the problem's "
                f"correlation_id names its line in {log}"
            )
    for task, count in sorted(current.task_failures.items()):
        new = count - (previous.task_failures.get(task, 0.0) if previous else 0.0)
        if new > 0:
            lines.append(f"WARNING {door}'s {task} failed {new:,.0f}× (restarted): see {log}")
    for registry, age in sorted(current.registry_age_s.items()):
        key = f"{door}:{registry}"
        if age > age_bound_s and key not in stale:
            stale.add(key)
            lines.append(
                f"WARNING {door}'s {registry} registry not reloaded for {age:.0f} s (bound "
                f"{age_bound_s:.0f} s): revocations and new devices go unseen, /readyz "
                f"answers 503; see {log}"
            )
        elif age <= age_bound_s and key in stale:
            stale.discard(key)
            lines.append(f"{door}'s {registry} registry reloaded again")
    return lines

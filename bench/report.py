"""Benchmark results: one row per figure, printed as a table and written as JSON and markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.stats import Summary, Target, ratio


@dataclass(slots=True)
class Row:
    """One figure of one scenario, for the project and (when there is one) its peer."""

    scenario: str
    measure: str  # what is measured, e.g. "readings/s"
    unit: str
    project: Summary
    peer: Summary | None = None
    peer_name: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer is None:
            return None
        return ratio(self.project.median, self.peer.median)

    @property
    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.project.median, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        r = self.ratio
        return {
            "scenario": self.scenario,
            "measure": self.measure,
            "unit": self.unit,
            "project": _summary(self.project),
            "peer": None if self.peer is None else _summary(self.peer),
            "peer_name": self.peer_name or None,
            "ratio": None if r is None or math.isinf(r) else round(r, 4),
            "target": None if self.target is None else self.target.describe(self.unit),
            "target_met": self.target_met,
            "note": self.note or None,
        }


def _summary(s: Summary) -> dict[str, Any]:
    return {
        "median": round(s.median, 3),
        "spread_pct": round(s.spread_pct, 1),
        "runs": [round(v, 3) for v in s.runs],
    }


@dataclass(slots=True)
class Results:
    machine: dict[str, object]
    mode: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "mode": self.mode,
            "rows": [row.as_dict() for row in self.rows],
            "notes": self.notes,
            "profiles": {
                name: [{"function": f, "share_pct": round(p, 1)} for f, p in top]
                for name, top in self.profiles.items()
            },
        }

    def table(self) -> str:
        """A markdown table; also readable as printed text."""
        lines = [
            "| scenario | measure | project (median, spread) | peer (median, spread) "
            "| ratio | target | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            peer = "—" if row.peer is None else f"{row.peer_name}: {_cell(row.peer)}"
            r = row.ratio
            ratio_text = "—" if r is None else ("∞" if math.isinf(r) else f"{r:.2f}")
            target = "—" if row.target is None else row.target.describe(row.unit)
            met = {None: "—", True: "yes", False: "**no**"}[row.target_met]
            lines.append(
                f"| {row.scenario} | {row.measure} ({row.unit}) | {_cell(row.project)} "
                f"| {peer} | {ratio_text} | {target} | {met} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        m = self.machine
        head = [
            f"# Benchmark results ({self.mode})",
            "",
            f"- date: {m.get('date')}",
            f"- machine: {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
            f"{m.get('cpu_model')}; Python {m.get('python')}",
            f"- broker: {m.get('broker')} (rows marked (tansu): the same scenario on tansu)",
            f"- load average before the run: {m.get('load_before')}; "
            f"shared with other work: {'yes' if m.get('shared') else 'no'}",
            "",
            "Medians over the repetitions; spread = (max − min) / median.",
            "",
            self.table(),
            "",
        ]
        if self.notes:
            head += ["## Notes", "", *(f"- {n}" for n in self.notes), ""]
        notes = [f"- {r.scenario} / {r.measure}: {r.note}" for r in self.rows if r.note]
        if notes:
            head += ["## Row notes", "", *notes, ""]
        for name, top in self.profiles.items():
            head += [f"## Profile: {name} (share of samples)", ""]
            head += [f"- {p:5.1f} %  `{f}`" for f, p in top] + [""]
        return "\n".join(head)

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        json_path = folder / f"{stem}.json"
        md_path = folder / f"{stem}.md"
        json_path.write_bytes(orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2))
        md_path.write_text(self.markdown())
        return json_path, md_path


def _cell(s: Summary) -> str:
    return f"{_number(s.median)} ±{s.spread_pct:.0f}%"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"

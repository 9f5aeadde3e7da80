"""The series the FHIR facade reads (readapi/fhir.py): for each, its query (queries.py),
each row's position for the signed cursor, and the Observation it writes (vitals/fhir.py,
fhir_observations.py). A search reads the series its `code` and `resolution` name; a read
by id the series its id names; `$everything` every series in turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from frontdoor.errors import Malformed
from readapi import fhir_observations, params, queries
from readapi import news2 as news2_scores
from readapi.fhir_observations import NEWS2_CODING
from vitals import fhir
from vitals.bounds import epoch_ms
from vitals.catalog import METRICS

# A series read from its start: after no time and no device.
FIRST: tuple[datetime, tuple[str, ...]] = (params.EARLIEST, ("",))

RESOLUTIONS = ("raw", "1m", "1h")


@dataclass(frozen=True, slots=True)
class Series:
    """What one search reads: its query, each row's position for the cursor and its
    Observation. `key` names the series in the cursor's scope."""

    key: str
    # (conn, patient, start, end, after (time, tie), rows)
    fetch: Callable[..., Awaitable[list[asyncpg.Record]]]
    position: Callable[[asyncpg.Record], tuple[datetime, tuple[str, ...]]]
    resource: Callable[[str, asyncpg.Record], dict[str, Any]]  # (patient, row)


def for_code(value: str | None, resolution: str | None) -> Series:
    """code=[SYSTEM|]CODE: a metric's code of the table (its readings, or with
    resolution=1m|1h its statistics), the blood pressure panel, or NEWS2."""
    assert value is not None
    system, bar, code = value.rpartition("|")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise Malformed("bad_resolution", f"resolution must be one of {', '.join(RESOLUTIONS)}")
    known = {(c.system, c.code): c.metric for c in fhir.CODES}
    known.update({pair: _PANEL for pair in fhir.BP_PANEL})
    known[(NEWS2_CODING["system"], NEWS2_CODING["code"])] = _NEWS2
    named = {m for (s, c), m in known.items() if c == code and (not bar or s == system)}
    if len(named) != 1 or not named <= fhir.readable_metrics() | {_PANEL, _NEWS2}:
        raise Malformed("unknown_code", f"code {value[:60]!r} is not a code this server serves")
    (metric,) = named
    if metric in (_PANEL, _NEWS2):
        if resolution not in (None, "raw"):
            raise Malformed("bad_resolution", "resolution 1m and 1h are for the code of one metric")
        return _PANEL_SERIES if metric == _PANEL else _NEWS2_SERIES
    if resolution in (None, "raw"):
        return _readings(metric)
    return _statistics(metric, resolution)


_PANEL, _NEWS2 = "bp_panel", "news2"


def _readings(metric: str) -> Series:
    async def fetch(conn: Any, patient: str, start: datetime, end: datetime,
                    after: tuple[datetime, tuple[str, ...]], rows: int) -> list[Any]:  # fmt: skip
        return await queries.raw(conn, patient, metric, start, end, (after[0], after[1][0]), rows)

    def resource(patient: str, row: Any) -> dict[str, Any]:
        return fhir.observation(
            patient_id=patient, metric=metric, t_ms=epoch_ms(row["t"]), value=row["value"],
            unit=row["unit"], device_id=row["device_id"],
        )  # fmt: skip

    return Series(metric, fetch, _at_device, resource)


def _statistics(metric: str, resolution: str) -> Series:
    unit = METRICS[metric].unit

    async def fetch(conn: Any, patient: str, start: datetime, end: datetime,
                    after: tuple[datetime, tuple[str, ...]], rows: int) -> list[Any]:  # fmt: skip
        return await queries.buckets(conn, resolution, patient, metric, start, end, after[0], rows)

    def resource(patient: str, row: Any) -> dict[str, Any]:
        return fhir_observations.statistics(
            patient_id=patient, metric=metric, resolution=resolution,
            bucket_ms=epoch_ms(row["bucket"]), unit=unit, mean=row["avg_value"],
            minimum=row["min_value"], maximum=row["max_value"], count=row["n"],
        )  # fmt: skip

    return Series(f"{metric}:{resolution}", fetch, lambda row: (row["bucket"], ()), resource)


def _at_device(row: Any) -> tuple[datetime, tuple[str, ...]]:
    return row["t"], (row["device_id"],)


async def _panels(conn: Any, patient: str, start: datetime, end: datetime,
                  after: tuple[datetime, tuple[str, ...]], rows: int) -> list[Any]:  # fmt: skip
    return await queries.bp_panels(conn, patient, start, end, (after[0], after[1][0]), rows)


def _panel(patient: str, row: Any) -> dict[str, Any]:
    return fhir_observations.blood_pressure(
        patient_id=patient, t_ms=epoch_ms(row["t"]), systolic=row["systolic"],
        diastolic=row["diastolic"], unit=row["unit"], device_id=row["device_id"],
    )  # fmt: skip


async def _scores(conn: Any, patient: str, start: datetime, end: datetime,
                  after: tuple[datetime, tuple[str, ...]], rows: int) -> list[Any]:  # fmt: skip
    return await queries.news2_history(conn, patient, start, end, after[0], rows)


def _score(patient: str, row: Any) -> dict[str, Any]:
    shown = news2_scores.score(row)
    return fhir_observations.news2(
        patient_id=patient, t_ms=epoch_ms(row["t"]), computed_ms=epoch_ms(row["computed_at"]),
        score=row["news2"], band=row["band"], red=row["red"], spo2_scale=row["spo2_scale"],
        missing=shown["missing"],
    )  # fmt: skip


_PANEL_SERIES = Series(_PANEL, _panels, _at_device, _panel)
_NEWS2_SERIES = Series(_NEWS2, _scores, lambda row: (row["t"], ()), _score)


def of_kind(kind: str) -> Series | None:
    """The series whose Observations' ids carry `kind`."""
    if kind == fhir_observations.PANEL_KIND:
        return _PANEL_SERIES
    if kind == fhir_observations.NEWS2_KIND:
        return _NEWS2_SERIES
    readable = fhir.readable_metrics()
    slug, _, resolution = kind.rpartition("-")
    if resolution in ("1m", "1h") and slug.replace("-", "_") in readable:
        return _statistics(slug.replace("-", "_"), resolution)
    metric = kind.replace("-", "_")
    return _readings(metric) if metric in readable else None


def every() -> list[Series]:
    """$everything's series in its order: each metric served as FHIR, the panel, NEWS2."""
    return [*(_readings(m) for m in sorted(fhir.readable_metrics())), _PANEL_SERIES,
            _NEWS2_SERIES]  # fmt: skip

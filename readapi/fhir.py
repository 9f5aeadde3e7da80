"""The read API's FHIR R4 facade: GET /fhir/r4/Observation (search), answered as a
`searchset` Bundle of Observations (vitals/fhir.py: a stored reading; fhir_observations.py:
statistics per minute or hour, the blood pressure panel, a NEWS2 score). The parameters
taken are those the CapabilityStatement advertises (fhir_capability.py).

The same reader keys, care-team scoping, limits and read audit as the JSON routes
(access.py), the same raw query and keyset paging with signed cursors (queries.py,
params.py). Refusals are OperationOutcomes with the JSON API's codes. Parameters this
facade does not support are refused, never ignored: a search that silently dropped a
filter would return more than was asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.errors import GatewayError, Malformed, NotFound
from frontdoor.fhir import fhir_response, outcome_response
from readapi import fhir_observations, params, queries
from readapi import news2 as news2_scores
from readapi.access import Access
from readapi.fhir_capability import OBSERVATION
from readapi.fhir_observations import NEWS2_CODING
from vitals import fhir
from vitals.bounds import epoch_ms
from vitals.catalog import METRICS

router = APIRouter()

_MICRO = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
# The rows of one patient and series within one millisecond: one per device.
READ_ROWS_MAX = 100
RESOLUTIONS = ("raw", "1m", "1h")


@dataclass(frozen=True, slots=True)
class Series:
    """What one search reads: its query, each row's position for the cursor and its
    Observation. `key` names the series in the cursor's scope."""

    key: str
    fetch: Callable[
        ..., Awaitable[list[asyncpg.Record]]
    ]  # (conn, patient, start, end, after, rows)
    position: Callable[[asyncpg.Record], tuple[datetime, tuple[str, ...]]]
    resource: Callable[[str, asyncpg.Record], dict[str, Any]]  # (patient, row)


@router.get("/fhir/r4/Observation")
async def search_observations(request: Request) -> Response:
    try:
        return fhir_response(await _search(request))
    except GatewayError as refusal:
        return outcome_response(refusal)


async def _search(request: Request) -> dict[str, Any]:
    key = request.app.state.authenticator.reader_for(request.headers.get("authorization"))
    lists: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        lists.setdefault(name, []).append(value)
    patient = _patient(lists)
    access: Access = request.app.state.access
    # The scope check first, as on the JSON routes: outside the reader's care teams every
    # search is 404, whatever its other parameters.
    async with access.reading(key, "fhir/Observation", patient) as read:
        # The CapabilityStatement's own table: what it advertises is what is taken.
        supported = OBSERVATION.param_names()
        unknown = sorted(set(lists) - set(supported))
        if unknown:
            raise Malformed(
                "unknown_parameter",
                f"unsupported search parameter(s): {', '.join(unknown)}; "
                f"supported: {', '.join(supported)}",
            )
        series = _series(_one(lists, "code"), _one(lists, "resolution", required=False))
        start, end = _dates(lists.get("date", []))
        settings = request.app.state.settings
        count = params.limit(_one(lists, "_count", required=False), settings.api_page_max)
        scope = f"fhir-observation:{patient}:{series.key}:{start.isoformat()}:{end.isoformat()}"
        cursor_key: bytes = request.app.state.cursor_key
        cursor = params.decode_cursor(_one(lists, "_cursor", required=False), scope, cursor_key)
        after = (cursor.at, cursor.tie) if cursor else (params.EARLIEST, ("",))
        async with request.app.state.pool.acquire() as conn:
            found = await series.fetch(conn, patient, start, end, after, count + 1)
        page, more = found[:count], len(found) > count
        read.rows = len(page)
    base = str(request.base_url).rstrip("/") + "/fhir/r4/"
    entries = []
    for row in page:
        resource = series.resource(patient, row)
        entries.append(
            {
                "fullUrl": base + "Observation/" + resource["id"],
                "resource": resource,
                "search": {"mode": "match"},
            }
        )
    query = [(n, v) for n, v in request.query_params.multi_items() if n != "_cursor"]
    links = [{"relation": "self", "url": str(request.url)}]
    if more:
        at, tie = series.position(page[-1])
        token = params.encode_cursor(params.Cursor(scope, at, tie), cursor_key)
        links.append(
            {
                "relation": "next",
                "url": base + "Observation?" + urlencode([*query, ("_cursor", token)]),
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle


@router.get("/fhir/r4/Observation/{ident}")
async def read_observation(request: Request, ident: str) -> Response:
    try:
        return fhir_response(await _read(request, ident))
    except GatewayError as refusal:
        return outcome_response(refusal)


def _no_such_observation() -> NotFound:
    return NotFound("no_such_observation", "no Observation with this id for this reader")


async def _read(request: Request, ident: str) -> dict[str, Any]:
    """The Observation whose id is `ident`: its id names the patient, series and time
    (vitals/fhir.resource_key), so it is the search's own query over one millisecond."""
    key = request.app.state.authenticator.reader_for(request.headers.get("authorization"))
    found = fhir.resource_key(ident)
    if found is None:
        raise _no_such_observation()
    access: Access = request.app.state.access
    # Outside the reader's care teams the same 404 as an id that names nothing.
    async with access.reading(
        key, "fhir/Observation/read", found.patient_id, missing=_no_such_observation
    ) as read:
        series = _series_of(found.kind)
        if series is None:
            raise _no_such_observation()
        at = params.EARLIEST + found.t_ms * _MS
        async with request.app.state.pool.acquire() as conn:
            rows = await series.fetch(conn, found.patient_id, at, at + _MS,
                                      (params.EARLIEST, ("",)), READ_ROWS_MAX)  # fmt: skip
        for row in rows:
            resource = series.resource(found.patient_id, row)
            if resource["id"] == ident:
                read.rows = 1
                return resource
        raise _no_such_observation()


def _series_of(kind: str) -> Series | None:
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


def _one(lists: dict[str, list[str]], name: str, *, required: bool = True) -> str | None:
    given = lists.get(name, [])
    if len(given) > 1:
        raise Malformed("repeated_parameter", f"{name} is given {len(given)} times")
    if not given:
        if required:
            raise Malformed("missing_parameter", f"{name} is required")
        return None
    return given[0]


def _patient(lists: dict[str, list[str]]) -> str:
    """patient=ID or Patient/ID, or subject=Patient/ID: exactly one of them."""
    given = [(n, v) for n in ("patient", "subject") for v in lists.get(n, [])]
    if len(given) != 1:
        raise Malformed("missing_parameter", "exactly one patient= or subject= is required")
    name, value = given[0]
    kind, slash, ident = value.rpartition("/")
    if slash and kind != "Patient":
        raise Malformed("bad_patient_id", f"{name} must reference a Patient")
    if not slash and name == "subject":
        raise Malformed("bad_patient_id", "subject must be Patient/ID")
    return params.patient(ident if slash else value)


def _series(value: str | None, resolution: str | None) -> Series:
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


def _dates(values: list[str]) -> tuple[datetime, datetime]:
    """date=geX / gtX (lower bound) and date=leX / ltX (upper bound), at most one of each;
    a full dateTime with an offset, as the JSON API's times."""
    start, end = params.EARLIEST, params.LATEST
    seen: set[str] = set()
    for value in values:
        prefix, moment_text = value[:2], value[2:]
        if prefix not in ("ge", "gt", "le", "lt"):
            raise Malformed(
                "bad_time", "date must carry a prefix ge, gt, le or lt (eq is not supported)"
            )
        side = "lower" if prefix in ("ge", "gt") else "upper"
        if side in seen:
            raise Malformed("repeated_parameter", f"two {side} bounds given for date")
        seen.add(side)
        moment = params.moment("date", moment_text)
        if prefix == "ge":
            start = moment
        elif prefix == "gt":
            start = moment + _MICRO
        elif prefix == "lt":
            end = moment
        else:
            end = moment + _MICRO
    params.window(start, end)
    return start, end

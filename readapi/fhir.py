"""The read API's FHIR R4 facade: GET /fhir/r4/Observation (search, a `searchset`
Bundle), GET /fhir/r4/Observation/{id} (read) and GET /fhir/r4/Patient/{id}/$everything,
over the series of fhir_series.py (readings, statistics per minute or hour, blood
pressure panels, NEWS2 scores). The parameters taken are those the CapabilityStatement
advertises (fhir_capability.py).

The same reader keys, care-team scoping, limits and read audit as the JSON routes
(access.py), the same raw query and keyset paging with signed cursors (queries.py,
params.py). Refusals are OperationOutcomes with the JSON API's codes. Parameters this
facade does not support are refused, never ignored: a search that silently dropped a
filter would return more than was asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.errors import GatewayError, Malformed, NotFound
from frontdoor.fhir import fhir_response, outcome_response
from readapi import fhir_series, params
from readapi.access import Access
from readapi.fhir_capability import EVERYTHING, EVERYTHING_DAYS_MAX, OBSERVATION
from vitals import fhir

router = APIRouter()

_MICRO = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
# The rows of one patient and series within one millisecond: one per device.
READ_ROWS_MAX = 100


async def _answered(work: Awaitable[dict[str, Any]]) -> Response:
    """The resource `work` builds, or its refusal as an OperationOutcome."""
    try:
        return fhir_response(await work)
    except GatewayError as refusal:
        return outcome_response(refusal)


@router.get("/fhir/r4/Observation")
async def search_observations(request: Request) -> Response:
    return await _answered(_search(request))


async def _search(request: Request) -> dict[str, Any]:
    key = request.app.state.authenticator.reader_for(request.headers.get("authorization"))
    lists = _lists(request)
    patient = _patient(lists)
    access: Access = request.app.state.access
    # The scope check first, as on the JSON routes: outside the reader's care teams every
    # search is 404, whatever its other parameters.
    async with access.reading(key, "fhir/Observation", patient) as read:
        # The CapabilityStatement's own table: what it advertises is what is taken.
        only_supported(lists, OBSERVATION.param_names())
        series = fhir_series.for_code(
            _one(lists, "code"), _one(lists, "resolution", required=False)
        )
        start, end = _dates(lists.get("date", []))
        count = _count(request, lists)
        scope = f"fhir-observation:{patient}:{series.key}:{start.isoformat()}:{end.isoformat()}"
        cursor_key: bytes = request.app.state.cursor_key
        cursor = params.decode_cursor(_one(lists, "_cursor", required=False), scope, cursor_key)
        after = (cursor.at, cursor.tie) if cursor else fhir_series.FIRST
        async with request.app.state.pool.acquire() as conn:
            found = await series.fetch(conn, patient, start, end, after, count + 1)
        page, more = found[:count], len(found) > count
        read.rows = len(page)
    token = None
    if more:
        at, tie = series.position(page[-1])
        token = params.encode_cursor(params.Cursor(scope, at, tie), cursor_key)
    return _searchset(request, [series.resource(patient, row) for row in page], token)


def _searchset(request: Request, resources: list[dict[str, Any]], token: str | None
               ) -> dict[str, Any]:  # fmt: skip
    """A searchset Bundle of Observations: `self`, and `next` (this request's parameters
    with the cursor `token`) while more remain."""
    base = str(request.base_url).rstrip("/") + "/fhir/r4/"
    entries = [
        {"fullUrl": base + "Observation/" + r["id"], "resource": r, "search": {"mode": "match"}}
        for r in resources
    ]
    links = [{"relation": "self", "url": str(request.url)}]
    if token is not None:
        query = [(n, v) for n, v in request.query_params.multi_items() if n != "_cursor"]
        following = request.url.replace(query=urlencode([*query, ("_cursor", token)]))
        links.append({"relation": "next", "url": str(following)})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle


@router.get("/fhir/r4/Observation/{ident}")
async def read_observation(request: Request, ident: str) -> Response:
    return await _answered(_read(request, ident))


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
        series = fhir_series.of_kind(found.kind)
        if series is None:
            raise _no_such_observation()
        at = params.EARLIEST + found.t_ms * _MS
        async with request.app.state.pool.acquire() as conn:
            rows = await series.fetch(conn, found.patient_id, at, at + _MS,
                                      fhir_series.FIRST, READ_ROWS_MAX)  # fmt: skip
        for row in rows:
            resource = series.resource(found.patient_id, row)
            if resource["id"] == ident:
                read.rows = 1
                return resource
        raise _no_such_observation()


@router.get("/fhir/r4/Patient/{patient_id}/$everything")
async def patient_everything(request: Request, patient_id: str) -> Response:
    return await _answered(_everything(request, patient_id))


async def _everything(request: Request, patient_id: str) -> dict[str, Any]:
    """Every Observation the search serves for one patient over a bounded range: the
    series one after another (each in time order), paged by one cursor whose tie names
    the series it stopped in."""
    key = request.app.state.authenticator.reader_for(request.headers.get("authorization"))
    patient = params.patient(patient_id)
    lists = _lists(request)
    access: Access = request.app.state.access
    async with access.reading(key, "fhir/Patient/$everything", patient) as read:
        only_supported(lists, EVERYTHING.param_names())
        start = params.moment("start", _one(lists, "start"))
        end = params.moment("end", _one(lists, "end"))
        params.window(start, end)
        if end - start > timedelta(days=EVERYTHING_DAYS_MAX):
            raise Malformed(
                "bad_range", f"start and end must be at most {EVERYTHING_DAYS_MAX} days apart"
            )
        count = _count(request, lists)
        scope = f"fhir-everything:{patient}:{start.isoformat()}:{end.isoformat()}"
        cursor_key: bytes = request.app.state.cursor_key
        cursor = params.decode_cursor(_one(lists, "_cursor", required=False), scope, cursor_key)
        every = fhir_series.every()
        index, after = 0, fhir_series.FIRST
        if cursor is not None:
            index, after = int(cursor.tie[0]), (cursor.at, (*cursor.tie[1:], "")[:1])
        found: list[tuple[int, Any]] = []
        async with request.app.state.pool.acquire() as conn:
            while index < len(every) and len(found) <= count:
                wanted = count + 1 - len(found)
                rows = await every[index].fetch(conn, patient, start, end, after, wanted)
                found += [(index, row) for row in rows]
                if len(rows) == wanted:
                    break
                index, after = index + 1, fhir_series.FIRST
        page, more = found[:count], len(found) > count
        read.rows = len(page)
    token = None
    if more:
        last_index, last = page[-1]
        at, tie = every[last_index].position(last)
        position = params.Cursor(scope, at, (str(last_index), *tie))
        token = params.encode_cursor(position, cursor_key)
    return _searchset(request, [every[i].resource(patient, row) for i, row in page], token)


def _lists(request: Request) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        lists.setdefault(name, []).append(value)
    return lists


def only_supported(lists: dict[str, list[str]], supported: tuple[str, ...]) -> None:
    """Refuses every parameter not in `supported` (the CapabilityStatement's table)."""
    unknown = sorted(set(lists) - set(supported))
    if unknown:
        raise Malformed(
            "unknown_parameter",
            f"unsupported parameter(s): {', '.join(unknown)}; supported: {', '.join(supported)}",
        )


def _count(request: Request, lists: dict[str, list[str]]) -> int:
    most: int = request.app.state.settings.api_page_max
    return params.limit(_one(lists, "_count", required=False), most)


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

"""The read API's FHIR R4 facade: GET /fhir/r4/Observation (search), answered as a
`searchset` Bundle of Observations built by vitals/fhir.py.

The same reader keys, care-team scoping, limits and read audit as the JSON routes
(access.py), the same raw query and keyset paging with signed cursors (queries.py,
params.py). Refusals are OperationOutcomes with the JSON API's codes. Parameters this
facade does not support are refused, never ignored: a search that silently dropped a
filter would return more than was asked for.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from frontdoor.errors import GatewayError, Malformed
from frontdoor.fhir import fhir_response, outcome_response
from readapi import params, queries
from readapi.access import Access
from vitals import fhir
from vitals.bounds import epoch_ms

router = APIRouter()

SEARCH_PARAMETERS = ("patient", "subject", "code", "date", "_count", "_cursor")
_MICRO = timedelta(microseconds=1)


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
        only_supported(lists, SEARCH_PARAMETERS)
        metric = _metric(_one(lists, "code"))
        start, end = _dates(lists.get("date", []))
        settings = request.app.state.settings
        count = params.limit(_one(lists, "_count", required=False), settings.api_page_max)
        scope = f"fhir-observation:{patient}:{metric}:{start.isoformat()}:{end.isoformat()}"
        cursor_key: bytes = request.app.state.cursor_key
        cursor = params.decode_cursor(_one(lists, "_cursor", required=False), scope, cursor_key)
        after = (cursor.at, cursor.tie[0]) if cursor else (params.EARLIEST, "")
        async with request.app.state.pool.acquire() as conn:
            found = await queries.raw(conn, patient, metric, start, end, after, count + 1)
        page, more = found[:count], len(found) > count
        read.rows = len(page)
    base = str(request.base_url).rstrip("/") + "/fhir/r4/"
    entries = []
    for row in page:
        resource = fhir.observation(
            patient_id=patient,
            metric=metric,
            t_ms=epoch_ms(row["t"]),
            value=row["value"],
            unit=row["unit"],
            device_id=row["device_id"],
        )
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
        last = page[-1]
        position = params.Cursor(scope, last["t"], (last["device_id"],))
        token = params.encode_cursor(position, cursor_key)
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


def only_supported(lists: dict[str, list[str]], supported: tuple[str, ...]) -> None:
    unknown = sorted(set(lists) - set(supported))
    if unknown:
        raise Malformed(
            "unknown_parameter",
            f"unsupported search parameter(s): {', '.join(unknown)}; "
            f"supported: {', '.join(supported)}",
        )


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


def _metric(value: str | None) -> str:
    """code=SYSTEM|CODE or CODE: one code of the table, of a metric served as FHIR."""
    assert value is not None
    system, bar, code = value.rpartition("|")
    known = [
        c
        for c in fhir.CODES
        if c.code == (code if bar else value) and (not bar or c.system == system)
    ]
    if not known or known[0].metric not in fhir.readable_metrics():
        raise Malformed("unknown_code", f"code {value[:60]!r} is not a code this server serves")
    return known[0].metric


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

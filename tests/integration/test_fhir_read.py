"""GET /fhir/r4/Observation on the read API, over real HTTP on a real PostgreSQL: readings
stored by the sink's writer come back as a searchset Bundle of vital-signs Observations,
paged by signed cursors, scoped by care teams and on record in the read audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx
import pytest

from frontdoor import registry_store
from tests.support.cli import CLI
from tests.support.ids import patient, uid
from tests.support.polling import until
from tests.support.readapi import AUTH, T0, bearer, iso, quick, row, running, store_rows
from vitals import fhir

pytestmark = pytest.mark.integration

FHIR = "application/fhir+json"
M = timedelta(minutes=1)


async def search(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **q: Any
                 ) -> httpx.Response:  # fmt: skip
    return await client.get("/fhir/r4/Observation", params=q, headers=headers or AUTH)


def outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == FHIR
    doc = response.json()
    assert doc["resourceType"] == "OperationOutcome"
    assert doc["issue"][0]["details"]["coding"][0]["code"] == code, doc


async def test_a_search_returns_pages_of_vital_signs_observations(database_url: str) -> None:
    p = patient()
    minutes = [T0 + i * M for i in range(3)]
    await store_rows(
        database_url,
        [row(p, "heart_rate", t, 70.0 + i) for i, t in enumerate(minutes)]
        + [row(p, "spo2", T0, 97.0)],
    )
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        window = {"date": [f"ge{iso(T0)}", f"lt{iso(T0 + 10 * M)}"]}
        first = await search(client, subject=f"Patient/{p}", code=f"{fhir.LOINC}|8867-4",
                             _count=2, **window)  # fmt: skip
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == FHIR
        page = first.json()
        assert (page["resourceType"], page["type"]) == ("Bundle", "searchset")
        observations = [e["resource"] for e in page["entry"]]
        assert [o["valueQuantity"]["value"] for o in observations] == [70.0, 71.0]
        hr = observations[0]
        assert hr["meta"]["profile"] == [
            fhir.VITALSIGNS,
            "http://hl7.org/fhir/StructureDefinition/heartrate",
        ]
        assert hr["code"]["coding"][0] == {
            "system": fhir.LOINC,
            "code": "8867-4",
            "display": "Heart rate",
        }
        assert hr["category"][0]["coding"][0]["code"] == "vital-signs"
        assert hr["subject"] == {"reference": f"Patient/{p}"}
        assert hr["effectiveDateTime"] == "2026-03-01T08:00:00.000Z"
        assert hr["valueQuantity"]["system"] == fhir.UCUM and hr["valueQuantity"]["code"] == "/min"
        assert page["entry"][0]["fullUrl"].endswith(f"/fhir/r4/Observation/{hr['id']}")

        (following,) = [link["url"] for link in page["link"] if link["relation"] == "next"]
        path = urlsplit(following)
        second = (await client.get(path.path, params=parse_qsl(path.query), headers=AUTH)).json()
        assert [e["resource"]["valueQuantity"]["value"] for e in second["entry"]] == [72.0]
        assert [link["relation"] for link in second["link"]] == ["self"]

        # The same reading under the device code the PHD IG puts first, the same id.
        again = (await search(client, patient=p, code="149530", _count=1, **window)).json()
        assert again["entry"][0]["resource"]["id"] == hr["id"]
        # SpO2 under either LOINC code, written with both.
        sat = (await search(client, patient=p, code="59408-5", **window)).json()
        codes = [c["code"] for c in sat["entry"][0]["resource"]["code"]["coding"]]
        assert codes == ["2708-6", "59408-5"]
        # Outside the range: an empty searchset, not an error.
        later = {"date": f"ge{iso(T0 + 60 * M)}"}
        empty = (await search(client, patient=p, code="8867-4", **later)).json()
        assert empty["type"] == "searchset" and "entry" not in empty  # FHIR has no empty lists


async def test_refused_searches_are_operation_outcomes(database_url: str) -> None:
    p = patient()
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        outcome(
            await search(client, patient=p, code="8867-4", _sort="date"), 400, "unknown_parameter"
        )
        outcome(await search(client, patient=p), 400, "missing_parameter")
        outcome(await search(client, code="8867-4"), 400, "missing_parameter")
        outcome(
            await search(client, patient=p, code="http://loinc.org|29463-7"), 400, "unknown_code"
        )
        outcome(
            await search(client, patient=p, code="8867-4", date="eq2026-03-01T08:00:00Z"),
            400,
            "bad_time",
        )
        outcome(
            await search(client, patient=p, code="8867-4", date="ge2026-03-01"), 400, "bad_time"
        )
        outcome(
            await search(client, patient=p, code="8867-4", _cursor="forged.x"), 400, "bad_cursor"
        )
        outcome(await search(client, subject=f"Device/{p}", code="8867-4"), 400, "bad_patient_id")
        unauthenticated = await client.get("/fhir/r4/Observation", params={"patient": p})
        outcome(unauthenticated, 401, "missing_credential")


async def test_care_teams_scope_the_search_and_every_search_is_on_record(
    database_url: str,
) -> None:
    owner = await asyncpg.connect(database_url)
    try:
        ward = uid("ward")
        mine, theirs = patient(), patient()
        await registry_store.add_team(owner, ward, actor=CLI)
        await registry_store.assign_patients(owner, ward, [mine], assign=True, actor=CLI)
        _, key = await registry_store.issue_key(
            owner, "reader", "ward-ehr", expires_at=None, actor=CLI, teams=[ward]
        )
        for p in (mine, theirs):
            await store_rows(database_url, [row(p, "spo2", T0, 95.0)])
        async with running(quick(database_url, api_rate_limit_per_s=0)) as client:

            async def loaded() -> bool:
                answer = await search(client, bearer(key), patient=mine, code="2708-6")
                return answer.status_code == 200

            await until(loaded, "the team key loaded", 10)
            answer = (await search(client, bearer(key), patient=mine, code="2708-6")).json()
            assert len(answer["entry"]) == 1
            # A stranger's patient is 404 whatever the parameters (a 404 before any 400).
            for query in ({"code": "2708-6"}, {"code": "nonsense", "_sort": "x"}):
                stranger = await search(client, bearer(key), patient=theirs, **query)
                outcome(stranger, 404, "no_such_patient")
                assert theirs not in stranger.text

            async def recorded() -> bool:
                found = await owner.fetch(
                    "SELECT outcome, row_count FROM read_audit WHERE patient_id = $1"
                    " AND route = 'fhir/Observation'",
                    theirs,
                )
                return len(found) == 2 and {r["outcome"] for r in found} == {"no_such_patient"}

            await until(recorded, "the refused searches recorded", 10)
    finally:
        await owner.close()

"""GET /fhir/r4/metadata on the read API: a CapabilityStatement stating exactly what the
Observation search takes. Every parameter it advertises is taken by the search; every
search parameter FHIR R4 defines for Observation (read from the definitions shipped with
the HAPI FHIR validator, not from a list of ours) that it does not advertise is refused
with an OperationOutcome."""

from __future__ import annotations

import json
import zipfile
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from readapi.fhir_capability import EVERYTHING, OBSERVATION, RESOURCES
from tests.support.fhir import validator
from tests.support.fhirdata import FHIR, outcome
from tests.support.fhirread import search
from tests.support.ids import patient
from tests.support.readapi import AUTH, T0, M, iso, quick, row, running, store_rows
from vitals import fhir

pytestmark = pytest.mark.integration

SEARCH_PARAMETERS = "org/hl7/fhir/r4/model/sp/search-parameters.json"
# Result parameters of R4's search page (not SearchParameter resources).
RESULT_PARAMETERS = ("_sort", "_include", "_revinclude", "_summary", "_total", "_elements",
                     "_contained", "_containedType", "_format", "_pretty")  # fmt: skip


def r4_observation_parameters() -> dict[str, str]:
    """name -> definition of every R4 search parameter that applies to Observation."""
    jar = next(validator.ensure_jars().glob("hapi-fhir-validation-resources-r4-*.jar"))
    with zipfile.ZipFile(jar) as archive:
        bundle = json.loads(archive.read(SEARCH_PARAMETERS))
    bases = {"Observation", "DomainResource", "Resource"}
    return {
        e["resource"]["code"]: e["resource"]["url"]
        for e in bundle["entry"]
        if bases & set(e["resource"]["base"])
    }


async def test_metadata_is_a_capability_statement_of_the_search_table(database_url: str) -> None:
    async with running(quick(database_url)) as client:
        answer = await client.get("/fhir/r4/metadata")  # no credential needed
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == FHIR
    statement = answer.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert (statement["fhirVersion"], statement["kind"]) == ("4.0.1", "instance")
    assert statement["format"][0] == fhir.MEDIA_TYPE
    (rest,) = statement["rest"]
    assert rest["mode"] == "server" and "reader key" in rest["security"]["description"]
    assert [r["type"] for r in rest["resource"]] == [r.type for r in RESOURCES]
    (observation,) = [r for r in rest["resource"] if r["type"] == "Observation"]
    assert [p["name"] for p in observation["searchParam"]] == list(OBSERVATION.param_names())
    assert [i["code"] for i in observation["interaction"]] == ["read", "search-type"]
    (patient_type,) = [r for r in rest["resource"] if r["type"] == "Patient"]
    assert [(o["name"], o["definition"]) for o in patient_type["operation"]] == [
        ("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything")
    ]
    # The alerts (test_fhir_subscriptions.py refuses what the DetectedIssue row leaves out).
    (issue,) = [r for r in rest["resource"] if r["type"] == "DetectedIssue"]
    assert [p["name"] for p in issue["searchParam"]] == ["patient", "_count", "_cursor"]
    assert [i["code"] for i in issue["interaction"]] == ["read", "search-type"]
    (subscription,) = [r for r in rest["resource"] if r["type"] == "Subscription"]
    assert [i["code"] for i in subscription["interaction"]] == ["create", "read", "delete"]
    # Each parameter claimed to be FHIR's is FHIR's, under its R4 definition.
    r4 = r4_observation_parameters()
    for param in observation["searchParam"]:
        if "definition" in param:
            assert r4[param["name"]] == param["definition"], param


async def test_every_advertised_parameter_is_taken_and_every_other_refused(
    database_url: str,
) -> None:
    p = patient()
    await store_rows(database_url, [row(p, "heart_rate", T0 + i * M, 70.0) for i in range(2)])
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        answer = (await client.get("/fhir/r4/metadata")).json()
        (observation,) = [r for r in answer["rest"][0]["resource"] if r["type"] == "Observation"]
        advertised = [param["name"] for param in observation["searchParam"]]

        first = (await search(client, patient=p, code="8867-4", _count=1)).json()
        (following,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
        cursor = dict(parse_qsl(urlsplit(following).query))["_cursor"]
        needed = {"patient": p, "code": "8867-4"}
        valid: dict[str, dict[str, Any]] = {
            "patient": needed,
            "subject": {"subject": f"Patient/{p}", "code": "8867-4"},
            "code": needed,
            "date": {**needed, "date": f"ge{iso(T0)}"},
            "resolution": {**needed, "resolution": "1m"},
            "_count": {**needed, "_count": 1},
            "_cursor": {**needed, "_count": 1, "_cursor": cursor},
        }
        # A parameter added to the table without a case here fails this test.
        assert sorted(valid) == sorted(advertised)
        for name in advertised:
            taken = await search(client, **valid[name])
            assert taken.status_code == 200, (name, taken.text)
            assert taken.json()["entry"], name

        others = sorted(set(r4_observation_parameters()) | set(RESULT_PARAMETERS))
        assert len(others) > 40  # the R4 list was read
        for name in others:
            if name in advertised:
                continue
            refused = await search(client, **needed, **{name: "x"})
            outcome(refused, 400, "unknown_parameter")


async def test_everything_takes_its_parameters_and_refuses_the_rest_of_r4s(
    database_url: str,
) -> None:
    p = patient()
    await store_rows(database_url, [row(p, "heart_rate", T0 + i * M, 70.0) for i in range(2)])
    path = f"/fhir/r4/Patient/{p}/$everything"
    bounds = {"start": iso(T0), "end": iso(T0 + 60 * M)}
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        first = (await client.get(path, params={**bounds, "_count": 1}, headers=AUTH)).json()
        (following,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
        cursor = dict(parse_qsl(urlsplit(following).query))["_cursor"]
        taken = await client.get(path, params={**bounds, "_count": 1, "_cursor": cursor},
                                 headers=AUTH)  # fmt: skip
        assert taken.status_code == 200 and len(taken.json()["entry"]) == 1
        assert sorted({"start", "end", "_count", "_cursor"}) == sorted(EVERYTHING.param_names())
        # R4's Patient-everything parameters this server does not take, and a search's.
        for name in ("_since", "_type", "code"):
            refused = await client.get(path, params={**bounds, name: "x"}, headers=AUTH)
            outcome(refused, 400, "unknown_parameter")

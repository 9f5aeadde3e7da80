"""A FHIR client library no one here wrote (fhirpy, from PyPI) reads the read API's FHIR
facade over real HTTP: the capability statement, a search it pages through by following
the `next` links itself, the statistics per minute, the blood pressure panel, and
refusals it turns into its own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, OperationOutcome

from tests.support.fhirread import stats
from tests.support.ids import patient
from tests.support.readapi import AUTH, T0, M, iso, quick, row, running, store_rows

pytestmark = pytest.mark.integration


@asynccontextmanager
async def fhir_client(database_url: str) -> AsyncIterator[AsyncFHIRClient]:
    async with running(quick(database_url, api_rate_limit_per_s=0)) as http:
        base = str(http.base_url).rstrip("/")
        yield AsyncFHIRClient(f"{base}/fhir/r4", authorization=AUTH["Authorization"])


async def test_fhirpy_reads_the_facade(database_url: str) -> None:
    p = patient()
    await store_rows(
        database_url,
        [row(p, "heart_rate", T0 + i * M, 60.0 + i) for i in range(5)]
        + [row(p, "systolic_bp", T0, 121.0), row(p, "diastolic_bp", T0, 79.0)],
    )
    async with fhir_client(database_url) as client:
        statement = await client.execute("metadata", method="get")
        assert statement["resourceType"] == "CapabilityStatement"
        assert statement["fhirVersion"] == "4.0.1"

        observations = client.resources("Observation")
        # Two a page: fhirpy follows three next links on its own.
        readings = await (
            observations.search(patient=p, code="http://loinc.org|8867-4", date=f"ge{iso(T0)}")
            .limit(2)
            .fetch_all()
        )
        assert [o["valueQuantity"]["value"] for o in readings] == [60.0, 61.0, 62.0, 63.0, 64.0]
        assert {o["subject"]["reference"] for o in readings} == {f"Patient/{p}"}
        assert len({o.id for o in readings}) == 5

        minutes = await observations.search(patient=p, code="8867-4", resolution="1m").fetch()
        assert [stats(o.serialize())["average"] for o in minutes] == [60.0, 61.0, 62.0, 63.0, 64.0]

        (panel,) = await observations.search(subject=f"Patient/{p}", code="85354-9").fetch()
        assert [c["valueQuantity"]["value"] for c in panel["component"]] == [121.0, 79.0]

        with pytest.raises(OperationOutcome) as refused:
            await observations.search(patient=p, code="8867-4").sort("-date").fetch()
        issue = refused.value.resource["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "unknown_parameter"


async def test_fhirpy_without_a_reader_key_is_refused(database_url: str) -> None:
    async with fhir_client(database_url) as client:
        client.authorization = "Bearer not-a-reader-key"
        with pytest.raises(AuthorizationError) as refused:
            await client.resources("Observation").search(patient=patient(), code="8867-4").fetch()
        assert "OperationOutcome" in str(refused.value)

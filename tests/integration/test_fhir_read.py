"""GET /fhir/r4/Observation on the read API, over real HTTP on a real PostgreSQL: readings
stored by the sink's writer come back as a searchset Bundle of vital-signs Observations,
paged by signed cursors, scoped by care teams and on record in the read audit."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest

from frontdoor import registry_store
from tests.support.cli import CLI
from tests.support.fhirdata import FHIR, outcome
from tests.support.fhirread import everything, search, stats
from tests.support.ids import patient, uid
from tests.support.polling import until
from tests.support.readapi import (
    AUTH,
    T0,
    VITALS,
    D,
    H,
    M,
    S,
    bearer,
    iso,
    quick,
    row,
    running,
    store_rows,
    store_scores_computed_from,
    vitals_upload,
)
from vitals import fhir

pytestmark = pytest.mark.integration


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
            for query in (
                {"code": "2708-6"},
                {"code": "nonsense", "_sort": "x"},
                {"code": "2708-6", "resolution": "1h"},
                {"code": "85354-9", "resolution": "bad"},
                {"code": "1104051000000101"},
            ):
                stranger = await search(client, bearer(key), patient=theirs, **query)
                outcome(stranger, 404, "no_such_patient")
                assert theirs not in stranger.text

            # $everything: mine answered, the stranger's 404 whatever the parameters.
            window = {"start": iso(T0), "end": iso(T0 + H)}
            assert (await everything(client, mine, bearer(key), **window)).status_code == 200
            for query in (window, {"_type": "x"}):
                outcome(await everything(client, theirs, bearer(key), **query), 404,
                        "no_such_patient")  # fmt: skip

            # Read by id: the stranger's reading is no Observation at all; mine is read.
            mine_read = await search(client, bearer(key), patient=mine, code="2708-6")
            ident = mine_read.json()["entry"][0]["resource"]["id"]
            assert (await client.get(f"/fhir/r4/Observation/{ident}", headers=bearer(key))
                    ).status_code == 200  # fmt: skip
            theirs_id = ident.replace(mine, theirs, 1)
            stranger = await client.get(f"/fhir/r4/Observation/{theirs_id}", headers=bearer(key))
            outcome(stranger, 404, "no_such_observation")
            assert theirs not in stranger.text
            assert (await client.get(f"/fhir/r4/Observation/{theirs_id}", headers=AUTH)
                    ).status_code == 200  # it exists: the team key may not see it  # fmt: skip

            async def recorded() -> bool:
                found = await owner.fetch(
                    "SELECT outcome, row_count FROM read_audit WHERE patient_id = $1"
                    " AND route = 'fhir/Observation'",
                    theirs,
                )
                read = await owner.fetch(
                    "SELECT outcome FROM read_audit WHERE patient_id = $1"
                    " AND route = 'fhir/Observation/read'",
                    theirs,
                )
                outcomes = [r["outcome"] for r in read]
                return (
                    len(found) == 5
                    and {r["outcome"] for r in found} == {"no_such_patient"}
                    and sorted(outcomes) == ["no_such_observation", "ok"]
                )

            await until(recorded, "the refused searches recorded", 10)
    finally:
        await owner.close()


async def test_statistics_per_minute_and_per_hour_are_observations_over_a_period(
    database_url: str,
) -> None:
    p = patient()
    await store_rows(
        database_url,
        [row(p, "heart_rate", T0, 60.0), row(p, "heart_rate", T0 + 20 * S, 70.0),
         row(p, "heart_rate", T0 + 30 * S, 100.0, device="w2"),
         row(p, "heart_rate", T0 + M, 90.0), row(p, "heart_rate", T0 + H, 40.0)],
    )  # fmt: skip
    window = {"date": [f"ge{iso(T0)}", f"lt{iso(T0 + 2 * H)}"]}
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        minutes = await search(client, patient=p, code="8867-4", resolution="1m", **window)
        assert minutes.status_code == 200, minutes.text
        found = [e["resource"] for e in minutes.json()["entry"]]
        assert [o["effectivePeriod"] for o in found] == [
            {"start": "2026-03-01T08:00:00.000Z", "end": "2026-03-01T08:01:00.000Z"},
            {"start": "2026-03-01T08:01:00.000Z", "end": "2026-03-01T08:02:00.000Z"},
            {"start": "2026-03-01T09:00:00.000Z", "end": "2026-03-01T09:01:00.000Z"},
        ]
        assert [stats(o) for o in found] == [
            {"average": 230 / 3, "minimum": 60.0, "maximum": 100.0, "count": 3},
            {"average": 90.0, "minimum": 90.0, "maximum": 90.0, "count": 1},
            {"average": 40.0, "minimum": 40.0, "maximum": 40.0, "count": 1},
        ]
        first = found[0]
        assert first["code"]["coding"][0]["code"] == "8867-4" and "valueQuantity" not in first
        assert first["component"][0]["valueQuantity"]["code"] == "/min"
        assert "effectiveDateTime" not in first

        # Hours, one per page: the cursor walks the buckets.
        hours = await search(client, patient=p, code="8867-4", resolution="1h", _count=1, **window)
        page = hours.json()
        assert [stats(e["resource"]) for e in page["entry"]] == [
            {"average": 80.0, "minimum": 60.0, "maximum": 100.0, "count": 4}
        ]
        (following,) = [link["url"] for link in page["link"] if link["relation"] == "next"]
        path = urlsplit(following)
        second = (await client.get(path.path, params=parse_qsl(path.query), headers=AUTH)).json()
        assert [stats(e["resource"]) for e in second["entry"]] == [
            {"average": 40.0, "minimum": 40.0, "maximum": 40.0, "count": 1}
        ]
        # Stable ids: the same bucket, the same id; another resolution, another id.
        again = (await search(client, patient=p, code="8867-4", resolution="1h", **window)).json()
        assert again["entry"][0]["resource"]["id"] == page["entry"][0]["resource"]["id"]
        assert again["entry"][0]["resource"]["id"] != first["id"]
        # The raw readings are still the default, and resolution=raw says so.
        raw = (await search(client, patient=p, code="8867-4", resolution="raw", **window)).json()
        assert len(raw["entry"]) == 5


async def test_systolic_and_diastolic_taken_together_are_one_blood_pressure_panel(
    database_url: str,
) -> None:
    p = patient()
    await store_rows(
        database_url,
        [row(p, "systolic_bp", T0, 128.0), row(p, "diastolic_bp", T0, 84.0),
         row(p, "systolic_bp", T0 + M, 131.0, device="cuff"),
         row(p, "diastolic_bp", T0 + M, 86.0, device="cuff"),
         row(p, "systolic_bp", T0 + 2 * M, 140.0)],  # alone: no panel
    )  # fmt: skip
    window = {"date": f"ge{iso(T0)}"}
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        answer = await search(client, patient=p, code=f"{fhir.LOINC}|85354-9", **window)
        assert answer.status_code == 200, answer.text
        panels = [e["resource"] for e in answer.json()["entry"]]
        assert len(panels) == 2
        bp = panels[0]
        assert bp["meta"]["profile"] == [
            fhir.VITALSIGNS, "http://hl7.org/fhir/StructureDefinition/bp"
        ]  # fmt: skip
        assert bp["code"]["coding"] == [fhir.BP_PANEL_CODING] and "valueQuantity" not in bp
        assert [
            (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"],
             c["valueQuantity"]["code"])
            for c in bp["component"]
        ] == [("8480-6", 128.0, "mm[Hg]"), ("8462-4", 84.0, "mm[Hg]")]  # fmt: skip
        assert panels[1]["device"] == {"reference": "Device/cuff"}
        assert bp["effectiveDateTime"] == "2026-03-01T08:00:00.000Z"
        # Under its device code too, the same panels; one per page with a cursor.
        mdc = await search(client, patient=p, code="150020", _count=1, **window)
        page = mdc.json()
        assert page["entry"][0]["resource"]["id"] == bp["id"]
        (following,) = [link["url"] for link in page["link"] if link["relation"] == "next"]
        path = urlsplit(following)
        second = (await client.get(path.path, params=parse_qsl(path.query), headers=AUTH)).json()
        assert [e["resource"]["id"] for e in second["entry"]] == [panels[1]["id"]]
        # Each reading is still served alone under its own code, the lone one too.
        systolic = (await search(client, patient=p, code="8480-6", **window)).json()
        assert [e["resource"]["valueQuantity"]["value"] for e in systolic["entry"]] == [
            128.0, 131.0, 140.0,
        ]  # fmt: skip


async def test_news2_scores_are_observations_searchable_by_their_code(database_url: str) -> None:
    p = patient()
    pulses = [115.0, 40.0, 70.0]  # 7, 8 (red), 5
    await store_scores_computed_from(
        database_url,
        [vitals_upload(p, T0 + i * M, **{**VITALS, "heart_rate": v}) for i, v in enumerate(pulses)],
    )
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        code = "http://snomed.info/sct|1104051000000101"
        answer = await search(client, patient=p, code=code, date=f"ge{iso(T0)}")
        assert answer.status_code == 200, answer.text
        scores = [e["resource"] for e in answer.json()["entry"]]
        assert [(o["effectiveDateTime"], o["valueQuantity"]["value"]) for o in scores] == [
            ("2026-03-01T08:00:00.000Z", 7), ("2026-03-01T08:01:00.000Z", 8),
            ("2026-03-01T08:02:00.000Z", 5),
        ]  # fmt: skip
        first = scores[0]
        assert first["code"]["coding"][0]["code"] == "1104051000000101"
        assert first["category"][0]["coding"][0]["code"] == "survey"
        assert first["valueQuantity"]["code"] == "{ScoreOf}"
        assert [n["text"] for n in first["note"]] == ["clinical risk: high"]
        assert "SpO2 scale 1" in first["method"]["text"]
        red = scores[1]["note"][0]["text"]
        assert red == "clinical risk: high (a single parameter scored 3)"
        # The code alone, a later range and one per page.
        later = await search(client, patient=p, code="1104051000000101", _count=1,
                             date=f"gt{iso(T0)}")  # fmt: skip
        assert [e["resource"]["valueQuantity"]["value"] for e in later.json()["entry"]] == [8]


async def test_refused_resolutions(database_url: str) -> None:
    p = patient()
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        for query in (
            {"code": "8867-4", "resolution": "5m"},
            {"code": "8867-4", "resolution": "auto"},  # the JSON API's; not here
            {"code": "85354-9", "resolution": "1m"},
            {"code": "1104051000000101", "resolution": "1h"},
        ):
            outcome(await search(client, patient=p, **query), 400, "bad_resolution")
        outcome(
            await search(client, patient=p, code="8867-4", resolution=["1m", "1h"]),
            400,
            "repeated_parameter",
        )
        # A cursor of the raw readings does not page the statistics.
        await store_rows(database_url, [row(p, "heart_rate", T0 + i * M, 70.0) for i in range(2)])
        raw = (await search(client, patient=p, code="8867-4", _count=1)).json()
        (following,) = [link["url"] for link in raw["link"] if link["relation"] == "next"]
        cursor = dict(parse_qsl(urlsplit(following).query))["_cursor"]
        outcome(
            await search(client, patient=p, code="8867-4", resolution="1m", _cursor=cursor),
            400,
            "bad_cursor",
        )


async def test_every_observation_a_search_returns_is_read_by_its_id(database_url: str) -> None:
    p = patient()
    await store_rows(
        database_url,
        [row(p, "heart_rate", T0, 61.0), row(p, "heart_rate", T0, 62.0, device="w2"),
         row(p, "systolic_bp", T0, 128.0), row(p, "diastolic_bp", T0, 84.0)],
    )  # fmt: skip
    await store_scores_computed_from(database_url, [vitals_upload(p, T0, **VITALS)])
    window = {"date": f"ge{iso(T0)}"}
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        found = []
        for query in (
            {"code": "8867-4"},
            {"code": "8867-4", "resolution": "1m"},
            {"code": "8867-4", "resolution": "1h"},
            {"code": "85354-9"},
            {"code": "1104051000000101"},
        ):
            answer = (await search(client, patient=p, **query, **window)).json()
            found.extend(answer["entry"])
        assert len(found) == 6  # two devices' readings at one time, 1m, 1h, panel, score
        for entry in found:
            path = urlsplit(entry["fullUrl"]).path
            read = await client.get(path, headers=AUTH)
            assert read.status_code == 200, read.text
            assert read.headers["content-type"] == FHIR
            assert read.json() == entry["resource"]
        reading = found[0]["resource"]
        assert reading["id"].startswith(f"{p}.heart-rate.")

        # Refused: an id of nothing stored, of no series, not ours; and no key at all.
        gone = reading["id"].rsplit(".", 2)[0] + ".0.abcdefabcdef"
        for ident in (gone, f"{p}.heart-rate-5m.0", f"{p}.bp.1.2.3", "0b6f9ad4-not-ours"):
            outcome(await client.get(f"/fhir/r4/Observation/{ident}", headers=AUTH),
                    404, "no_such_observation")  # fmt: skip
        outcome(
            await client.get(f"/fhir/r4/Observation/{reading['id']}"), 401, "missing_credential"
        )


async def test_a_patient_id_a_fhir_id_cannot_hold_gets_a_stable_unreadable_id(
    database_url: str,
) -> None:
    p = f"patient_{uuid.uuid4().hex[:6]}"  # "_" is not a FHIR id character
    await store_rows(database_url, [row(p, "spo2", T0, 96.0)])
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        first = (await search(client, patient=p, code="2708-6")).json()
        again = (await search(client, patient=p, code="2708-6")).json()
        ident = first["entry"][0]["resource"]["id"]
        assert ident == again["entry"][0]["resource"]["id"]
        assert str(uuid.UUID(ident)) == ident
        assert first["entry"][0]["resource"]["subject"]["identifier"]["value"] == p
        outcome(await client.get(f"/fhir/r4/Observation/{ident}", headers=AUTH),
                404, "no_such_observation")  # fmt: skip


async def test_everything_pages_every_observation_of_a_bounded_range(database_url: str) -> None:
    p = patient()
    await store_rows(
        database_url,
        [row(p, "heart_rate", T0 + i * M, 60.0 + i) for i in range(3)]
        + [row(p, "spo2", T0, 97.0), row(p, "systolic_bp", T0, 128.0),
           row(p, "diastolic_bp", T0, 84.0), row(p, "heart_rate", T0 + 8 * D, 99.0)],
    )  # fmt: skip
    await store_scores_computed_from(database_url, [vitals_upload(p, T0 + M, **VITALS)])
    bounds = {"start": iso(T0), "end": iso(T0 + 7 * D)}
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        whole = await everything(client, p, **bounds)
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-type"] == FHIR
        found = [e["resource"] for e in whole.json()["entry"]]
        # Series after series (metrics by name, the panel, NEWS2), each in time order;
        # the heart rate 8 days on is outside the range.
        codes = [o["code"]["coding"][0]["code"] for o in found]
        assert codes == ["8462-4", "8867-4", "8867-4", "8867-4", "2708-6", "8480-6",
                         "85354-9", "1104051000000101"]  # fmt: skip
        # Every one is the search's own Observation, read back by its id.
        for o in found:
            assert (await client.get(f"/fhir/r4/Observation/{o['id']}", headers=AUTH)).json() == o
        # Two a page, the cursor carries over from one series to the next.
        paged: list[dict[str, Any]] = []
        answer = await everything(client, p, _count=2, **bounds)
        while True:
            page = answer.json()
            assert len(page.get("entry", [])) <= 2
            paged += [e["resource"] for e in page.get("entry", [])]
            following = [link["url"] for link in page["link"] if link["relation"] == "next"]
            if not following:
                break
            path = urlsplit(following[0])
            answer = await client.get(path.path, params=parse_qsl(path.query), headers=AUTH)
        assert paged == found


async def test_refused_everything_requests(database_url: str) -> None:
    p = patient()
    bounds = {"start": iso(T0), "end": iso(T0 + D)}
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        outcome(await everything(client, p, **bounds, _type="Observation"), 400,
                "unknown_parameter")  # fmt: skip
        outcome(await everything(client, p, start=iso(T0)), 400, "missing_parameter")
        outcome(await everything(client, p, start="2026-03-01", end=iso(T0 + D)), 400, "bad_time")
        outcome(await everything(client, p, start=iso(T0 + D), end=iso(T0)), 400, "bad_range")
        outcome(await everything(client, p, start=iso(T0), end=iso(T0 + 8 * D)), 400, "bad_range")
        outcome(await everything(client, p, **bounds, _cursor="forged.x"), 400, "bad_cursor")
        outcome(await client.get(f"/fhir/r4/Patient/{p}/$everything", params=bounds), 401,
                "missing_credential")  # fmt: skip

"""What the product emits in FHIR, validated by the HAPI FHIR validator (Java, offline):
zero errors. The resources come from the running gateway and read API (real HTTP, broker
and PostgreSQL) and from vitals/fhir.py's builder for every metric served as FHIR; the
example PHD Bundle of docs/fhir.md is validated too. Warnings are written to
.local/fhir-validator/warnings.txt (docs/fhir.md lists them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.support import fhirdata as fd
from tests.support.fhir import validator
from tests.support.fhirdata import ours, post
from tests.support.ids import patient
from tests.support.readapi import (
    AUTH,
    T0,
    VITALS,
    iso,
    quick,
    row,
    running,
    store_rows,
    store_scores_computed_from,
    vitals_upload,
)
from tests.support.secured_gateway import Gateway
from vitals import fhir
from vitals.catalog import METRICS

pytestmark = pytest.mark.integration


def test_the_pom_and_the_helper_name_the_same_hapi_version() -> None:
    assert validator.pom_version() == validator.HAPI_VERSION


async def test_every_fhir_resource_the_product_emits_validates_without_errors(
    gateway: Gateway, fleet: dict[str, str], database_url: str
) -> None:
    emitted: dict[str, Any] = {}
    for metric in sorted(fhir.readable_metrics()):
        sample = (METRICS[metric].low + METRICS[metric].high) / 2
        emitted[f"observation-{metric}"] = fhir.observation(
            patient_id="p-00017", metric=metric, t_ms=1_795_312_800_000, value=sample,
            unit=METRICS[metric].unit, device_id="watch 8842",
        )  # fmt: skip

    key = fleet["key_a"]
    batch = ours(fleet, fd.heart_rate(), fd.blood_pressure(), fd.spo2(400), kind="batch")
    answer = await post(gateway, key, batch)
    assert answer.status_code == 200
    emitted["batch-response"] = answer.json()
    transaction = ours(fleet, fd.heart_rate(t="2026-01-01T10:00:09+08:00"), fd.spo2())
    answer = await post(gateway, key, transaction)
    assert answer.status_code == 200
    emitted["transaction-response"] = answer.json()
    refused = await post(gateway, key, ours(fleet, fd.heart_rate(400)))
    assert refused.status_code == 422
    emitted["operation-outcome"] = refused.json()
    emitted["example-phd-bundle"] = fd.bundle(fd.heart_rate(), fd.spo2(), fd.blood_pressure())

    p = patient()
    minute = timedelta(minutes=1)
    await store_rows(
        database_url,
        [row(p, "heart_rate", T0 + i * minute, 70.0 + i) for i in range(3)]
        + [row(p, "systolic_bp", T0, 128.0), row(p, "diastolic_bp", T0, 84.0)]
        + [row(p, "steps", T0, 120.0)],
    )
    await store_scores_computed_from(
        database_url,
        [vitals_upload(p, T0, **VITALS), vitals_upload(p, T0 + minute, heart_rate=40.0)],
    )
    searches = {
        "searchset": {"code": "8867-4", "_count": 2},
        "searchset-per-minute": {"code": "8867-4", "resolution": "1m"},
        "searchset-per-hour": {"code": "8867-4", "resolution": "1h"},
        "searchset-steps-per-hour": {"code": "55423-8", "resolution": "1h"},
        "searchset-blood-pressure-panel": {"code": "85354-9"},
        "searchset-news2": {"code": "http://snomed.info/sct|1104051000000101"},
    }
    async with running(quick(database_url, api_rate_limit_per_s=0)) as client:
        for name, query in searches.items():
            found = await client.get(
                "/fhir/r4/Observation",
                params={"patient": p, "date": f"ge{iso(T0)}", **query},
                headers=AUTH,
            )
            assert found.status_code == 200, found.text
            assert found.json()["entry"], name
            emitted[name] = found.json()
        refused = await client.get(
            "/fhir/r4/Observation", params={"patient": p, "code": "8867-4", "resolution": "5m"},
            headers=AUTH,
        )  # fmt: skip
        assert refused.status_code == 400
        emitted["search-refused"] = refused.json()
        emitted["capability-statement"] = (await client.get("/fhir/r4/metadata")).json()
        whole = await client.get(
            f"/fhir/r4/Patient/{p}/$everything",
            params={"start": iso(T0), "end": iso(T0 + 60 * minute)}, headers=AUTH,
        )  # fmt: skip
        assert whole.status_code == 200 and len(whole.json()["entry"]) > 5
        emitted["everything"] = whole.json()
        first_id = whole.json()["entry"][0]["resource"]["id"]
        read = await client.get(f"/fhir/r4/Observation/{first_id}", headers=AUTH)
        assert read.status_code == 200
        emitted["read"] = read.json()

    results = validator.validate(emitted)
    errors = {
        name: [m for m in messages if m.severity in ("ERROR", "FATAL")]
        for name, messages in results.items()
    }
    lines = sorted(
        {
            f"{m.severity}\t{m.location}\t{m.text}"
            for messages in results.values()
            for m in messages
            if m.severity not in ("ERROR", "FATAL")
        }
    )
    out = validator.ROOT / ".local" / "fhir-validator" / "warnings.txt"
    out.write_text("".join(f"{line}\n" for line in lines))
    assert not any(errors.values()), {n: e for n, e in errors.items() if e}

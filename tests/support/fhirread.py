"""Reading the read API's FHIR facade in tests: searches, statistics, exports."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.readapi import AUTH

STATISTICS = "http://terminology.hl7.org/CodeSystem/observation-statistics"


async def search(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **q: Any
                 ) -> httpx.Response:  # fmt: skip
    return await client.get("/fhir/r4/Observation", params=q, headers=headers or AUTH)


def stats(observation: dict[str, Any]) -> dict[str, Any]:
    """An aggregate's components by statistic code: value (count: the integer)."""
    found = {}
    for c in observation["component"]:
        (coding,) = c["code"]["coding"]
        assert coding["system"] == STATISTICS
        found[coding["code"]] = c.get("valueInteger", c.get("valueQuantity", {}).get("value"))
    return found


async def everything(client: httpx.AsyncClient, p: str, headers: dict[str, str] | None = None,
                     **q: Any) -> httpx.Response:  # fmt: skip
    return await client.get(f"/fhir/r4/Patient/{p}/$everything", params=q, headers=headers or AUTH)

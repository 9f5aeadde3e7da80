"""schemathesis against the gateway's own OpenAPI document, over real HTTP.

The gateway runs as `vitals gateway` in its own process (the registry on and enforced,
a real broker and database), and schemathesis generates requests for every operation in
/openapi.json: no answer may be a 5xx other than a documented 503, and every answer must
have a documented status, content type and a body matching its schema. The number of
examples is bounded (FUZZ_EXAMPLES) to keep `make test` short.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis

# schemathesis imports its OpenAPI modules on first use, and the test uses it first in a
# worker thread, where pytest's assertion rewriting compiles them: CPython 3.11.7 (this
# machine's) then failed once with "SystemError: AST constructor recursion depth
# mismatch" (cpython gh-106905). Imported here, in the main thread, before any test.
import schemathesis.specs.openapi.schemas  # noqa: E402, F401
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from frontdoor import registry_store
from vitals.settings import Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = int(os.environ.get("VITALS_FUZZ_EXAMPLES", "40"))
GATEWAY_TOKEN = "fuzz-gateway-token"
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
]


async def _admin_key(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await registry_store.issue_key(
            conn, "admin", "fuzz", expires_at=None, actor=("cli", "pytest")
        )
        return key
    finally:
        await conn.close()


@pytest.fixture
def fuzzed_gateway(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`vitals gateway` with the registry on; its URL and an admin token."""
    admin_key = asyncio.run(_admin_key(settings.database_url))
    port = localinfra.free_port()
    env = {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "VITALS_TOPIC_PREFIX": settings.topic_prefix,
        "VITALS_DATABASE_URL": settings.database_url,
        "VITALS_GATEWAY_PORT": str(port),
        "VITALS_GATEWAY_CREDENTIALS": f"gw-fuzz:{GATEWAY_TOKEN}",
        "VITALS_GATEWAY_REGISTRY": "true",
        "VITALS_REQUIRE_DEVICE_REGISTRY": "true",
        "VITALS_RATE_LIMIT_PER_S": "0",
        "VITALS_MAX_READINGS_PER_UPLOAD": "20",
        "VITALS_LOG_LEVEL": "WARNING",
    }
    with open(tmp_path / "gateway.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitalsctl.cli", "gateway"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _ready(url):
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        yield {"url": url, "admin": admin_key}
    finally:
        proc.terminate()
        proc.wait(15)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def fuzz(gateway: dict[str, str]) -> list[str]:
    """Run the bounded examples for every operation; the operations tried."""
    schema = schemathesis.openapi.from_url(f"{gateway['url']}/openapi.json")
    tried: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        token = gateway["admin"] if operation.path.startswith("/v1/admin") else GATEWAY_TOKEN
        _examples(operation, gateway["url"], token)
        tried.append(operation.label)
    return tried


def _examples(operation: Any, url: str, token: str) -> None:
    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def examples(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=10
        )

    examples()


async def test_every_generated_request_gets_a_documented_answer(
    fuzzed_gateway: dict[str, str],
) -> None:
    tried = await asyncio.to_thread(fuzz, fuzzed_gateway)
    assert "POST /v1/readings" in tried and "POST /v1/admin/devices" in tried

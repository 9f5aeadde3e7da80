"""Transport: the gateway and the read API over TLS and mutual TLS, and PostgreSQL's
least-privilege roles.

Certificates are made for each run with `cryptography` (a CA, a server certificate for
127.0.0.1, a client certificate); nothing is checked in.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingest.server import build_server
from readapi import server as api_server
from tests.support.gateway import JSON, limits, upload
from tests.support.polling import until
from tests.support.topics import produced
from vitals.settings import LOCAL_READER_TOKEN, Settings

pytestmark = pytest.mark.integration


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey],
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(ip))]), critical=False
        )
    return builder.sign(issuer[1], hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("vitals test CA", ca_key, ("vitals test CA", ca_key), ca=True)
    _write(folder / "ca", ca, ca_key)
    for name, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(folder / name, _certificate(name, key, ("vitals test CA", ca_key), ip=ip), key)
    yield folder


@asynccontextmanager
async def serving_on(settings: Settings, build: Callable = build_server) -> AsyncIterator[int]:
    """The port of the server `build` makes (the gateway's by default) while it runs."""
    server = build(settings)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110  (uvicorn exposes no event)
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


async def _answers_200(client: httpx.AsyncClient, url: str) -> bool:
    return (await client.get(url)).status_code == 200


def _client_context(pki: Path, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_certificate:
        context.load_cert_chain(pki / "client.crt", pki / "client.key")
    return context


async def test_the_gateway_serves_https_and_refuses_plain_http(
    settings: Settings, pki: Path
) -> None:
    tls = limits(
        settings,
        gateway_tls_certfile=str(pki / "server.crt"),
        gateway_tls_keyfile=str(pki / "server.key"),
    )
    async with serving_on(tls) as port:
        context = _client_context(pki, with_certificate=False)
        async with httpx.AsyncClient(verify=context, timeout=10) as client:
            # Ready once its producer is connected (until then an upload is a fair 503).
            ready = f"https://127.0.0.1:{port}/readyz"
            await until(lambda: _answers_200(client, ready), "the gateway ready over HTTPS", 30)
            answer = await client.post(
                f"https://127.0.0.1:{port}/v1/readings", content=upload(), headers=JSON
            )
            assert answer.status_code == 202, answer.text
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.post(
                    f"http://127.0.0.1:{port}/v1/readings", content=upload(), headers=JSON
                )
    assert len(await produced(settings)) == 1


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    settings: Settings, pki: Path
) -> None:
    mutual = limits(
        settings,
        gateway_tls_certfile=str(pki / "server.crt"),
        gateway_tls_keyfile=str(pki / "server.key"),
        gateway_tls_client_ca=str(pki / "ca.crt"),
    )
    async with serving_on(mutual) as port:
        url = f"https://127.0.0.1:{port}/v1/readings"
        anonymous = _client_context(pki, with_certificate=False)
        async with httpx.AsyncClient(verify=anonymous, timeout=5) as client:
            with pytest.raises(httpx.HTTPError):
                await client.post(url, content=upload(), headers=JSON)
        hub = _client_context(pki, with_certificate=True)
        async with httpx.AsyncClient(verify=hub, timeout=10) as client:
            ready = f"https://127.0.0.1:{port}/readyz"
            await until(lambda: _answers_200(client, ready), "the gateway ready over mTLS", 30)
            assert (await client.post(url, content=upload(), headers=JSON)).status_code == 202
    assert len(await produced(settings)) == 1


async def test_the_read_api_serves_https_refuses_plain_http_and_can_require_client_certs(
    settings: Settings, pki: Path
) -> None:
    files = {
        "api_port": 0,
        "api_tls_certfile": str(pki / "server.crt"),
        "api_tls_keyfile": str(pki / "server.key"),
    }
    reader = {"Authorization": f"Bearer {LOCAL_READER_TOKEN}"}
    async with serving_on(settings.model_copy(update=files), api_server.build_server) as port:
        url = f"https://127.0.0.1:{port}/v1/patients/p-tls/alerts"
        context = _client_context(pki, with_certificate=False)
        async with httpx.AsyncClient(verify=context, timeout=10) as client:
            answer = await client.get(url, headers=reader)
            assert answer.status_code == 200, answer.text
            assert answer.json()["items"] == []
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{port}/v1/patients/p-tls/alerts", headers=reader)

    mutual = settings.model_copy(update={**files, "api_tls_client_ca": str(pki / "ca.crt")})
    async with serving_on(mutual, api_server.build_server) as port:
        url = f"https://127.0.0.1:{port}/v1/patients/p-tls/alerts"
        anonymous = _client_context(pki, with_certificate=False)
        async with httpx.AsyncClient(verify=anonymous, timeout=5) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(url, headers=reader)
        dashboard = _client_context(pki, with_certificate=True)
        async with httpx.AsyncClient(verify=dashboard, timeout=10) as client:
            assert (await client.get(url, headers=reader)).status_code == 200


def test_api_tls_settings_go_together() -> None:
    with pytest.raises(ValueError, match="api_tls_certfile and api_tls_keyfile"):
        Settings(api_tls_certfile="c.pem")
    with pytest.raises(ValueError, match="api_tls_client_ca"):
        Settings(api_tls_client_ca="ca.pem")


# --- PostgreSQL roles -------------------------------------------------------------------


@pytest.fixture
def login_as(database_url: str) -> Iterator[Callable[[str], str]]:
    """A login role granted one of the migration's group roles; dropped afterwards."""
    made: list[str] = []

    def make(group: str) -> str:
        name = f"t_{group}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {group}')
        made.append(name)
        scheme, rest = database_url.split("://", 1)
        return f"{scheme}://{name}@{rest.split('@', 1)[1]}"

    yield make
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')


READING = (
    "INSERT INTO readings (patient_id, metric, t, device_id, value, unit, upload_id, received_at)"
    " VALUES ('p', 'heart_rate', now(), 'd', 70, '/min', gen_random_uuid(), now())"
)


async def _can(url: str, sql: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(sql)
            raise _Rollback
    except _Rollback:
        return True
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await conn.close()


class _Rollback(Exception):
    pass


@pytest.mark.parametrize(
    ("role", "allowed", "denied"),
    [
        (
            "vitals_reader",
            ["SELECT * FROM readings", "SELECT * FROM alerts", "SELECT * FROM reader_keys"],
            [READING, "SELECT * FROM api_keys", "SELECT * FROM audit_log"],
        ),
        (
            "vitals_sink",
            [READING, "SELECT * FROM alerts"],
            [
                "SELECT * FROM api_keys",
                "SELECT * FROM reader_keys",
                "DELETE FROM readings",
                "DROP TABLE readings",
            ],
        ),
        (
            "vitals_gateway",
            ["SELECT * FROM api_keys", "SELECT * FROM device_patients"],
            [
                "SELECT * FROM readings",
                "SELECT * FROM audit_log",
                "SELECT * FROM reader_keys",
                "UPDATE api_keys SET revoked_at = now()",
            ],
        ),
    ],
)
async def test_each_process_role_can_do_its_job_and_nothing_else(
    login_as: Callable[[str], str], role: str, allowed: list[str], denied: list[str]
) -> None:
    url = login_as(role)
    assert [sql for sql in allowed if not await _can(url, sql)] == []
    assert [sql for sql in denied if await _can(url, sql)] == []

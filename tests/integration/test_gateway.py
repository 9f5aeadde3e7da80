"""The gateway over real HTTP (uvicorn in this process) against a real broker (tansu).

What was produced is read back from the readings topic with a plain aiokafka consumer.
Every test has its own topic prefix, so "exactly one message" means exactly one.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from frontdoor.errors import TooLarge
from ingest.publisher import Publisher
from tests.conftest import LOCAL, test_broker_kind
from tests.support.gateway import (
    AUTH,
    DEVICE,
    JSON,
    PATIENT,
    assert_problem,
    is_ready,
    limits,
    post,
    reading,
    running,
    upload,
)
from tests.support.metrics import metric_value
from tests.support.polling import eventually
from tests.support.topics import produced
from vitals import contract
from vitals.kafka import create_topics
from vitals.logs import JsonFormatter
from vitals.settings import LOCAL_GATEWAY_ID, LOCAL_GATEWAY_TOKEN, Settings
from vitalsctl import localinfra, localkafka

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(limits(settings)) as client:
        yield client


# --- accepted uploads ----------------------------------------------------------------


async def test_a_good_upload_is_one_message_in_canonical_units(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    response = await post(
        gateway,
        upload(
            reading(),
            reading("body_temp", "2026-01-01T02:00:00Z", 98.6, "[degF]"),
            reading("glucose", "2026-01-01T02:00:00.500Z", 180.16, "mg/dL"),
        ),
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (3, [])

    (record,) = await produced(settings)
    assert record.key == PATIENT.encode()
    message = contract.decode_upload(record.value)
    assert message.upload_id == answer["upload_id"]
    assert (message.gateway_id, message.device_id, message.patient_id) == (
        LOCAL_GATEWAY_ID,
        DEVICE,
        PATIENT,
    )
    hr, temp, glucose = message.readings
    t0 = 1_767_232_800_000  # 2026-01-01T02:00:00Z
    assert (hr.metric, hr.t, hr.v, hr.unit) == ("heart_rate", t0, 72.0, "/min")
    assert (temp.t, temp.unit, temp.v) == (t0, "Cel", pytest.approx(37.0))
    assert (glucose.t, glucose.unit) == (t0 + 500, "mmol/L")
    assert glucose.v == pytest.approx(10.0, abs=1e-3)


async def test_a_gzip_upload_is_accepted(gateway: httpx.AsyncClient, settings: Settings) -> None:
    response = await post(
        gateway, gzip.compress(upload(reading(v=80))), {**JSON, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 202, response.text
    (record,) = await produced(settings)
    assert contract.decode_upload(record.value).readings[0].v == 80.0


async def test_mixed_items_answer_rejections_and_produce_only_the_good_ones(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    items = [
        reading(v=61),
        reading(metric="blood_alcohol"),
        reading(t="2026-01-01T10:00:00"),
        reading(t="2099-01-01T00:00:00Z"),
        reading(v=999),
        reading(unit="furlongs"),
        reading(v="NaN"),
        reading(v=True),
        reading(v="72"),
        reading(t="soon"),
        "not an object",
        reading(t="2026-01-01T10:00:01+08:00", v=62),
        reading(v=63),  # item 0's metric and time, another value
    ]
    response = await post(gateway, upload(*items))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
        (1, "unknown_metric"),
        (2, "timestamp_without_offset"),
        (3, "future_timestamp"),
        (4, "out_of_range"),
        (5, "unknown_unit"),
        (6, "bad_value"),
        (7, "bad_value"),
        (8, "bad_value"),
        (9, "bad_timestamp"),
        (10, "bad_item"),
        (12, "conflicting_value"),
    ]
    assert all(r["detail"] for r in answer["rejected"])
    (record,) = await produced(settings)
    assert [r.v for r in contract.decode_upload(record.value).readings] == [61.0, 62.0]


# --- refusals ------------------------------------------------------------------------


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body httpx sends with Transfer-Encoding: chunked, no Content-Length."""
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


BOMB = gzip.compress(b" " * 10_000_000, compresslevel=9)  # ~10 KB on the wire, 10 MB inflated
BIG = upload(*[reading(v=60 + i % 100) for i in range(400)])  # > 16 KB
assert len(BOMB) < 16_384 < len(BIG)

GZIP = {**JSON, "Content-Encoding": "gzip"}
ENVELOPE = {"device_id": "d", "patient_id": "p"}

REFUSALS = [
    pytest.param(b'{"device_id": "d", "readings": [', JSON, 400, "malformed_json", id="bad-json"),
    pytest.param(b'{"readings": [{"v": NaN}]}', JSON, 400, "malformed_json", id="nan-literal"),
    pytest.param(b"[1, 2, 3]", JSON, 400, "not_an_object", id="not-an-object"),
    pytest.param(
        orjson.dumps({"device_id": "d", "readings": [reading()]}),
        JSON,
        400,
        "bad_envelope",
        id="no-patient",
    ),
    pytest.param(
        orjson.dumps({**ENVELOPE, "readings": 3}),
        JSON,
        400,
        "bad_envelope",
        id="readings-not-a-list",
    ),
    pytest.param(
        upload(),
        {**AUTH, "Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
        id="wrong-media-type",
    ),
    pytest.param(upload(), AUTH, 415, "unsupported_media_type", id="no-media-type"),
    pytest.param(
        upload(), {**JSON, "Content-Encoding": "br"}, 415, "unsupported_encoding", id="brotli"
    ),
    pytest.param(
        upload(), {"Content-Type": "application/json"}, 401, "missing_credential", id="no-token"
    ),
    pytest.param(
        upload(),
        {**JSON, "Authorization": "Bearer not-the-token"},
        401,
        "invalid_credential",
        id="wrong-token",
    ),
    pytest.param(BIG, JSON, 413, "body_too_large", id="too-large-content-length"),
    pytest.param(chunked(BIG), JSON, 413, "body_too_large", id="too-large-chunked"),
    pytest.param(BOMB, GZIP, 413, "decompressed_too_large", id="gzip-bomb"),
    pytest.param(b"\x1f\x8b\x08\x00garbage", GZIP, 400, "bad_gzip", id="bad-gzip"),
    pytest.param(
        gzip.compress(upload(*[reading()] * 201)),
        GZIP,
        413,
        "too_many_readings",
        id="too-many-readings",
    ),
    pytest.param(
        orjson.dumps({**ENVELOPE, "readings": []}), JSON, 422, "empty_batch", id="empty-batch"
    ),
    pytest.param(
        upload(reading(v=0), reading(metric="x")), JSON, 422, "nothing_valid", id="all-invalid"
    ),
    pytest.param(
        upload(),
        {**JSON, "Idempotency-Key": "has spaces"},
        400,
        "invalid_request",
        id="bad-idempotency-key",
    ),
]


@pytest.mark.parametrize(("content", "headers", "status", "code"), REFUSALS)
async def test_a_bad_request_is_refused_with_its_status_and_code_and_produces_nothing(
    gateway: httpx.AsyncClient,
    settings: Settings,
    content: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    doc = assert_problem(await post(gateway, content, headers), status, code)
    if code == "nothing_valid":
        assert [(r["index"], r["code"]) for r in doc["rejected"]] == [
            (0, "out_of_range"),
            (1, "unknown_metric"),
        ]
    assert await produced(settings) == []


async def test_401_challenges_for_a_bearer_token(gateway: httpx.AsyncClient) -> None:
    missing = await post(gateway, upload(), {"Content-Type": "application/json"})
    assert missing.headers["www-authenticate"] == 'Bearer realm="vitals"'
    wrong = await post(gateway, upload(), {**JSON, "Authorization": "Bearer wrong-token"})
    assert wrong.headers["www-authenticate"] == 'Bearer realm="vitals", error="invalid_token"'


async def test_fastapis_own_errors_are_problems_too(gateway: httpx.AsyncClient) -> None:
    assert_problem(await gateway.get("/v2/readings"), 404, "not_found")
    not_allowed = assert_problem(await gateway.get("/v1/readings"), 405, "method_not_allowed")
    assert not_allowed["title"] == "Method Not Allowed"
    assert (await gateway.get("/v1/readings")).headers["allow"] == "POST"


async def test_a_client_gone_mid_body_is_counted_and_nothing_is_produced(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    def abandoned() -> float:
        return metric_value(text, "vitals_gateway_uploads_total", outcome="client_disconnected")

    text = (await gateway.get("/metrics")).text
    before = abandoned()
    host, port = gateway.base_url.host, gateway.base_url.port
    _, writer = await asyncio.open_connection(host, port)
    body = upload()
    head = (
        f"POST /v1/readings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {LOCAL_GATEWAY_TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    async def counted() -> bool:
        nonlocal text
        text = (await gateway.get("/metrics")).text
        return abandoned() == before + 1

    await eventually(counted, 10)
    assert await produced(settings) == []


# --- idempotency ---------------------------------------------------------------------


async def test_a_retry_with_the_same_key_gets_the_same_answer_and_no_second_message(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    body = upload(reading(v=70), reading(v=1000))
    headers = {**JSON, "Idempotency-Key": "upload-0001"}
    first = await post(gateway, body, headers)
    again = await post(gateway, body, headers)
    zipped = await post(gateway, gzip.compress(body), {**headers, "Content-Encoding": "gzip"})
    assert first.status_code == again.status_code == zipped.status_code == 202
    assert first.json() == again.json() == zipped.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    (record,) = await produced(settings)
    assert contract.decode_upload(record.value).upload_id == first.json()["upload_id"]


async def test_the_same_key_with_another_body_is_a_conflict(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {**JSON, "Idempotency-Key": "upload-0002"}
    assert (await post(gateway, upload(reading(v=70)), headers)).status_code == 202
    assert_problem(await post(gateway, upload(reading(v=71)), headers), 409, "idempotency_conflict")
    assert len(await produced(settings)) == 1


async def test_concurrent_requests_with_one_key_produce_once(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {**JSON, "Idempotency-Key": "upload-0003"}
    answers = await asyncio.gather(*(post(gateway, upload(), headers) for _ in range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["upload_id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert len(await produced(settings)) == 1


async def test_uploads_without_a_key_are_separate_uploads(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    first, second = [await post(gateway, upload()) for _ in range(2)]
    assert first.json()["upload_id"] != second.json()["upload_id"]
    ids = {contract.decode_upload(r.value).upload_id for r in await produced(settings)}
    assert ids == {first.json()["upload_id"], second.json()["upload_id"]}


# --- nothing accepted is lost --------------------------------------------------------


async def test_bad_uploads_interleaved_with_good_ones_lose_nothing(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    good = [upload(reading(v=60 + i), patient_id=f"p-{i}") for i in range(20)]
    bad: list[tuple[Any, dict[str, str]]] = [
        (b"{not json", JSON),
        (BOMB, {**JSON, "Content-Encoding": "gzip"}),
        (upload(reading(v=0)), JSON),
        (BIG, JSON),
        (upload(), {**AUTH}),
        (b"\x1f\x8b garbage", {**JSON, "Content-Encoding": "gzip"}),
    ] * 3
    requests: list[tuple[Any, dict[str, str]]] = [(g, JSON) for g in good] + bad
    random.Random(7).shuffle(requests)
    answers = await asyncio.gather(*(post(gateway, c, h) for c, h in requests))
    accepted = {a.json()["upload_id"] for a in answers if a.status_code == 202}
    assert len(accepted) == 20
    assert sum(a.status_code >= 400 for a in answers) == len(bad)
    messages = [contract.decode_upload(r.value) for r in await produced(settings)]
    assert {m.upload_id for m in messages} == accepted
    assert sorted(m.readings[0].v for m in messages) == [60.0 + i for i in range(20)]


# --- Kafka unavailable ---------------------------------------------------------------


async def test_the_gateway_starts_without_kafka_and_answers_503(settings: Settings) -> None:
    nowhere = limits(settings, kafka_bootstrap=f"127.0.0.1:{localinfra.free_port()}")
    async with running(nowhere, wait_ready=False) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        not_ready = await client.get("/readyz")
        assert_problem(not_ready, 503, "not_ready")
        assert not_ready.headers["retry-after"] == "7"
        refused = await post(client, upload())
        doc = assert_problem(refused, 503, "kafka_unavailable")
        assert refused.headers["retry-after"] == "7"
        assert "upload_id" in doc


@contextmanager
def broker_to_crash(port: int) -> Iterator[localkafka.BrokerNode]:
    """A broker of our own, of the session's kind, that the test can kill."""
    kind, _ = test_broker_kind()
    folder = LOCAL / f"crash-broker.{os.getpid()}"
    broker = localkafka.start_broker(kind, folder, LOCAL, port=port)
    try:
        yield broker.nodes[0]
    finally:
        broker.stop()


async def test_kafka_arriving_late_is_picked_up_and_losing_it_is_503(settings: Settings) -> None:
    port = localinfra.free_port()
    own = limits(settings, kafka_bootstrap=f"127.0.0.1:{port}", produce_timeout_s=1.0)
    async with running(own, wait_ready=False) as client:
        assert (await client.get("/readyz")).status_code == 503
        with broker_to_crash(port) as broker:
            await create_topics(own)
            await eventually(lambda: is_ready(client), 20)  # the producer kept retrying
            assert (await post(client, upload())).status_code == 202
            broker.kill()  # a crash, not a clean stop
        # The broker is gone: not accepted, and not ready.
        refused = await post(client, upload())
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "kafka_not_acknowledged"
        assert refused.headers["retry-after"] == "7"
        assert (await client.get("/readyz")).status_code == 503


async def test_an_upload_larger_than_kafka_takes_is_too_large_not_unavailable(
    settings: Settings,
) -> None:
    readings = tuple(contract.Reading("heart_rate", t, 60.0, "/min") for t in range(200))
    big = contract.Upload("u-1", LOCAL_GATEWAY_ID, DEVICE, PATIENT, 0, readings)
    small = contract.Upload("u-2", LOCAL_GATEWAY_ID, DEVICE, PATIENT, 0, readings[:5])
    async with Publisher(limits(settings), max_request_size=2048) as publisher:
        await eventually(publisher.ready, 10)
        with pytest.raises(TooLarge) as caught:
            await publisher.publish(big)
        assert caught.value.code == "message_too_large"
        await publisher.publish(small)
    assert [contract.decode_upload(r.value).upload_id for r in await produced(settings)] == ["u-2"]


# --- probes, metrics, logs -----------------------------------------------------------


async def test_healthz_and_readyz_answer_when_connected(gateway: httpx.AsyncClient) -> None:
    health = await gateway.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await gateway.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_metrics_count_requests_readings_rejections_and_produce_time(
    gateway: httpx.AsyncClient,
) -> None:
    before = (await gateway.get("/metrics")).text
    assert (
        await post(
            gateway,
            upload(reading(v=70), reading(t="2026-01-01T10:00:01+08:00", v=71), reading(v=5)),
        )
    ).status_code == 202
    assert (await post(gateway, b"{", JSON)).status_code == 400
    response = await gateway.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert grew("vitals_gateway_readings_accepted_total") == 2
    assert grew("vitals_gateway_readings_rejected_total", code="out_of_range") == 1
    assert grew("vitals_gateway_uploads_total", outcome="accepted") == 1
    assert grew("vitals_gateway_uploads_total", outcome="malformed_json") == 1
    assert grew("vitals_gateway_requests_total", route="/v1/readings", status="202") == 1
    assert grew("vitals_gateway_requests_total", route="/v1/readings", status="400") == 1
    assert grew("vitals_gateway_produce_seconds_count") == 1
    # the route template, not the raw path: unknown paths share one label
    await gateway.get("/no/such/path")
    final = (await gateway.get("/metrics")).text
    assert (
        metric_value(final, "vitals_gateway_requests_total", route="unmatched", status="404") >= 1
    )


async def test_one_log_line_per_upload_without_patient_device_or_values(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest")
    secret_value = 123.456  # no timestamp, id or count can contain this text
    accepted = await post(gateway, upload(reading(v=secret_value), reading(v=1000)))
    refused = await post(gateway, upload(reading(v=1000)))
    lines = [r for r in caplog.records if r.name.startswith("ingest.intake")]
    assert len(lines) == 2
    first, second = (orjson.loads(JsonFormatter().format(r)) for r in lines)
    assert first["upload_id"] == accepted.json()["upload_id"]
    assert (first["gateway_id"], first["outcome"], first["accepted"], first["rejected"]) == (
        LOCAL_GATEWAY_ID,
        "accepted",
        1,
        1,
    )
    assert second["upload_id"] == refused.json()["upload_id"]
    assert (second["outcome"], second["status"]) == ("nothing_valid", 422)
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for identity in (PATIENT, DEVICE, str(secret_value)):
        assert identity not in text


# --- the process -----------------------------------------------------------------------


@pytest.fixture
def gateway_process(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`vitals gateway` as ops run it: its own process, configured by environment."""
    port = localinfra.free_port()
    env = {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "VITALS_TOPIC_PREFIX": settings.topic_prefix,
        "VITALS_GATEWAY_PORT": str(port),
    }
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitalsctl.cli", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_vitals_gateway_process_serves_and_stops_cleanly_on_sigterm(
    settings: Settings, gateway_process: tuple[subprocess.Popen[bytes], int, Path]
) -> None:
    proc, port, log = gateway_process
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

        async def started() -> bool:
            assert proc.poll() is None, log.read_text()
            return await is_ready(client)

        await eventually(started, 30)
        assert (await post(client, upload())).status_code == 202
    proc.send_signal(signal.SIGTERM)
    returncode = await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
    assert returncode == 0, log.read_text()
    assert len(await produced(settings)) == 1
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["msg"] == "upload accepted" for line in lines)


async def test_beyond_its_connection_limit_the_gateway_answers_503_instead_of_queueing(
    settings: Settings,
) -> None:
    """Slow clients holding every slot: the next request is refused at once (backpressure),
    not queued in memory; once they finish, uploads are accepted again."""
    async with running(limits(settings, max_connections=3)) as client:
        base_url = str(client.base_url)
        port = int(base_url.rstrip("/").rsplit(":", 1)[1])
        await client.aclose()  # its keep-alive connection would take a slot
        await asyncio.sleep(0.1)
        held = []
        for _ in range(3):  # each sends its headers and half its body, then waits
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + LOCAL_GATEWAY_TOKEN.encode() + b"\r\n"
                b'Content-Length: 100\r\n\r\n{"device_id":'
            )
            await writer.drain()
            held.append(writer)
        await asyncio.sleep(0.2)  # let the server take all three
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as fresh:
            refused = await fresh.post("/v1/readings", content=upload(), headers=JSON)
            for writer in held:
                writer.close()
            problem = assert_problem(refused, 503, "too_many_connections")
            assert refused.headers["retry-after"] == "7"  # limits(): retry_after_s
            assert refused.headers["connection"] == "close"
            assert "connection limit" in problem["detail"]
            await eventually(lambda: _accepts(fresh), 10)


async def _accepts(client: httpx.AsyncClient) -> bool:
    answer = await client.post("/v1/readings", content=upload(), headers=JSON)
    return answer.status_code == 202

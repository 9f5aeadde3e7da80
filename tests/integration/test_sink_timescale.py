"""The readings sink on a real broker (tansu) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from sinks.timescale.batching import BatchSizer
from sinks.timescale.rows import rows_of
from sinks.timescale.runner import STAGE
from sinks.timescale.writer import ReadingsWriter, copy_then_upsert
from tests.support.inprocess import sink_committed, timescale_sink
from tests.support.metrics import sample
from tests.support.polling import WAIT_S, until
from tests.support.topics import committed, group_offsets
from vitals import contract
from vitals.db.pgtime import from_ms
from vitals.errors import ConfigError, ContractError
from vitals.settings import Settings
from vitalsctl import localinfra

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # 2026-11-18, ms


# --- helpers -------------------------------------------------------------------------


def _upload(
    patient: str,
    times: Sequence[int],
    *,
    device: str = "watch-1",
    upload_id: str | None = None,
    metric: str = "heart_rate",
    shift: float = 0.0,
) -> contract.Upload:
    """Values follow the time, so a retry of the same readings repeats them exactly;
    `shift` makes another value for the same readings (a conflict)."""
    return contract.Upload(
        upload_id=upload_id or str(uuid.uuid4()),
        gateway_id="gw-test",
        device_id=device,
        patient_id=patient,
        received=T0 + 10_000_000,
        readings=tuple(
            contract.Reading(metric, t, 60.0 + (t - T0) // 1000 % 60 + shift, "/min") for t in times
        ),
    )


async def _produce(settings: Settings, values: Sequence[bytes], key: bytes) -> list[RecordMetadata]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        return [
            await producer.send_and_wait(settings.topic(contract.READINGS), v, key=key)
            for v in values
        ]
    finally:
        await producer.stop()


async def _stored(database_url: str, patient: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT * FROM readings WHERE patient_id = $1 ORDER BY metric, t, device_id", patient
        )
    finally:
        await conn.close()


@pytest.fixture
def own(settings: Settings) -> Settings:
    """The test's settings with a consumer group of its own."""
    return settings.model_copy(update={"sink_group": f"sink-{uuid.uuid4().hex[:8]}"})


# --- the writer ----------------------------------------------------------------------


async def test_copy_then_upsert_stores_each_reading_once_and_counts_new_rows(
    database_url: str,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    first = rows_of(_upload(patient, [T0, T0 + 1000, T0 + 2000]))
    # Inside one batch: a reading twice (a retried upload flattened next to itself).
    batch1 = first + first[:1]
    # Across batches: two old readings again, one new, and the same time on another device.
    batch2 = (
        first[1:]
        + rows_of(_upload(patient, [T0 + 3000]))
        + rows_of(_upload(patient, [T0], device="watch-2"))
    )

    conn = await asyncpg.connect(database_url)
    try:
        assert await copy_then_upsert(conn, batch1) == (3, ())
        assert await copy_then_upsert(conn, batch2) == (2, ())
        assert await copy_then_upsert(conn, batch2) == (0, ())
        assert await copy_then_upsert(conn, []) == (0, ())
    finally:
        await conn.close()

    stored = await _stored(database_url, patient)
    assert [(r["t"], r["device_id"]) for r in stored] == [
        (from_ms(T0), "watch-1"),
        (from_ms(T0), "watch-2"),
        (from_ms(T0 + 1000), "watch-1"),
        (from_ms(T0 + 2000), "watch-1"),
        (from_ms(T0 + 3000), "watch-1"),
    ]
    assert stored[0]["value"] == 60.0 and stored[0]["unit"] == "/min"
    assert stored[0]["upload_id"] == first[0][6]


async def test_writer_copies_while_all_new_and_takes_the_staging_path_after_a_duplicate(
    database_url: str,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    first = rows_of(_upload(patient, [T0, T0 + 1000]))
    second = rows_of(_upload(patient, [T0 + 2000, T0 + 3000]))
    third = rows_of(_upload(patient, [T0 + 4000]))
    fourth = rows_of(_upload(patient, [T0 + 5000]))
    writer = ReadingsWriter()
    conn = await asyncpg.connect(database_url)
    try:
        assert await writer.write(conn, first) == (2, ())  # all new: the plain COPY
        assert not writer.careful
        # A stored reading in the batch: the COPY aborts whole, the staging path stores
        # the new one, and the writer stays careful (a redelivered stretch has more).
        assert await writer.write(conn, first[1:] + third) == (1, ())
        assert writer.careful
        assert await writer.write(conn, second) == (2, ())  # staging path, nothing repeated...
        assert not writer.careful  # ...so back to the plain COPY
        # A reading twice within one batch fails the COPY the same way.
        assert await writer.write(conn, fourth + fourth) == (1, ())
        assert writer.careful
        assert await writer.write(conn, []) == (0, ())
    finally:
        await conn.close()

    stored = await _stored(database_url, patient)
    assert [r["t"] for r in stored] == [from_ms(T0 + i * 1000) for i in range(6)]
    assert stored[4]["upload_id"] == third[0][6]


async def _conflicts(database_url: str, patient: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT * FROM reading_conflicts WHERE patient_id = $1"
            " ORDER BY metric, t, device_id, conflicting_value",
            patient,
        )
    finally:
        await conn.close()


async def test_a_different_value_for_a_stored_reading_is_recorded_as_a_conflict_once(
    database_url: str,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    first = rows_of(_upload(patient, [T0, T0 + 1000]))
    other = _upload(patient, [T0], shift=-20.0)  # T0 again, 40 where 60 is stored
    writer = ReadingsWriter()
    conn = await asyncpg.connect(database_url)
    try:
        assert await writer.write(conn, first) == (2, ())
        # Across batches: the stored value stays, the other is recorded.
        assert await writer.write(conn, rows_of(other)) == (0, ("heart_rate",))
        # Redelivered, or retried beside an exact repeat: recorded already, nothing new.
        assert await writer.write(conn, rows_of(other) + first) == (0, ())
        # Within one batch, arrival order decides: the first value of a new key is stored
        # whatever order the staging table is read in, a later different one recorded, a
        # later equal one a duplicate, and a third value is a second conflict of the key.
        new = rows_of(_upload(patient, [T0 + 5000]))
        clash = rows_of(_upload(patient, [T0 + 5000], shift=30.0))
        third = rows_of(_upload(patient, [T0], shift=5.0))
        assert await writer.write(conn, clash + new + clash + third) == (
            1,
            ("heart_rate", "heart_rate"),
        )
    finally:
        await conn.close()

    stored = await _stored(database_url, patient)
    assert [(r["t"], r["value"]) for r in stored] == [
        (from_ms(T0), 60.0),
        (from_ms(T0 + 1000), 61.0),
        (from_ms(T0 + 5000), 95.0),
    ]
    conflicts = await _conflicts(database_url, patient)
    assert [
        (r["t"], r["device_id"], r["stored_value"], r["conflicting_value"], r["unit"])
        for r in conflicts
    ] == [
        (from_ms(T0), "watch-1", 60.0, 40.0, "/min"),
        (from_ms(T0), "watch-1", 60.0, 65.0, "/min"),
        (from_ms(T0 + 5000), "watch-1", 95.0, 65.0, "/min"),
    ]
    assert str(conflicts[0]["upload_id"]) == other.upload_id
    assert conflicts[0]["received_at"] == from_ms(other.received)
    assert all(r["seen_at"] is not None for r in conflicts)


def test_uploads_that_cannot_be_stored_are_contract_errors() -> None:
    with pytest.raises(ContractError, match="not a UUID"):
        rows_of(_upload("p", [T0], upload_id="retry-7"))
    with pytest.raises(ContractError, match="out of range"):
        rows_of(_upload("p", [10**18]))


def test_batch_size_grows_on_fast_full_batches_and_halves_on_slow_ones() -> None:
    sizer = BatchSizer(50, 200, 0.5, stage="test")

    sizer.observe(50, 0.1)  # full and fast
    assert sizer() == 75
    sizer.observe(10, 0.1)  # partial: we keep up, no growth
    assert sizer() == 75
    for _ in range(5):
        sizer.observe(sizer(), 0.1)
    assert sizer() == 200  # capped at the maximum
    sizer.observe(200, 0.9)  # slow
    assert sizer() == 100
    for _ in range(5):
        sizer.observe(sizer(), 2.0)
    assert sizer() == 50  # floored at the minimum


def test_batch_size_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ConfigError, match="min <= max"):
        BatchSizer(500, 100, 0.5)
    with pytest.raises(ConfigError, match="positive"):
        BatchSizer(1, 100, 0.0)


# --- the sink on the broker ----------------------------------------------------------


async def test_every_reading_is_stored_exactly_once_despite_redelivered_uploads(
    own: Settings,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    upload = _upload(patient, [T0 + i * 1000 for i in range(20)])
    # The gateway retried with a new upload id: same device, metric, times.
    retried = _upload(patient, [T0 + i * 1000 for i in range(10, 25)])
    other = _upload(patient, [T0, T0 + 1000], metric="spo2")
    values = [contract.encode_upload(u) for u in (upload, upload, retried, other)]
    await _produce(own, values, key=patient.encode())
    new, duplicate = (sample("vitals_sink_rows_total", result=r) for r in ("new", "duplicate"))
    writes = sample("vitals_sink_write_seconds_count")

    async with timescale_sink(own):
        await sink_committed(own)

    stored = await _stored(own.database_url, patient)
    assert len(stored) == 25 + 2
    # The metrics tell the same: 27 new rows, the other 30 of the 57 sent already stored.
    assert sample("vitals_sink_rows_total", result="new") - new == 27
    assert sample("vitals_sink_rows_total", result="duplicate") - duplicate == 30
    assert sample("vitals_sink_write_seconds_count") > writes
    assert len({(r["metric"], r["t"], r["device_id"]) for r in stored}) == len(stored)
    # The first write of a key wins: readings 10-19 keep the first upload's id.
    by_time = {r["t"]: r for r in stored if r["metric"] == "heart_rate"}
    assert str(by_time[from_ms(T0 + 15_000)]["upload_id"]) == upload.upload_id
    assert str(by_time[from_ms(T0 + 24_000)]["upload_id"]) == retried.upload_id


async def test_bad_messages_are_parked_with_origin_and_error_and_the_rest_is_stored(
    own: Settings,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    goods = [_upload(patient, [T0 + i]) for i in range(3)]
    # Decodes fine but PostgreSQL refuses it: NUL is not valid in a text column.
    refused = _upload(patient, [T0 + 10], metric="heart\x00rate")
    values = [
        contract.encode_upload(goods[0]),
        b"{not json",
        contract.encode_upload(goods[1]),
        contract.encode_upload(refused),
        contract.encode_upload(goods[2]),
    ]
    sent = await _produce(own, values, key=patient.encode())

    async with timescale_sink(own):
        await sink_committed(own)

    stored = await _stored(own.database_url, patient)
    assert sorted(str(r["upload_id"]) for r in stored) == sorted(g.upload_id for g in goods)
    letters = await _dead_letters(own, 2)
    by_offset = {letter["origin"]["offset"]: letter for letter in letters}
    for index, error in ((1, "ContractError"), (3, "CharacterNotInRepertoireError")):
        letter = by_offset[sent[index].offset]
        assert letter["origin"] == {
            "topic": own.topic(contract.READINGS),
            "partition": sent[index].partition,
            "offset": sent[index].offset,
        }
        assert letter["error"].startswith(error)
        assert letter["stage"] == STAGE
        assert base64.b64decode(letter["value_b64"]) == values[index]


async def _dead_letters(settings: Settings, count: int) -> list[dict]:
    consumer = AIOKafkaConsumer(
        settings.topic(contract.DEADLETTER),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[dict] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=200)
                found += [orjson.loads(r.value) for part in batches.values() for r in part]
    finally:
        await consumer.stop()
    return found


class _Outlet:
    """A TCP port that refuses connections until opened, then forwards to PostgreSQL.

    The database "comes back" on the same address, as after a restart or a network
    partition, without touching the test server.
    """

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.port = localinfra.free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    def url(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.close()


async def test_database_outage_commits_nothing_reports_not_ready_and_loses_nothing(
    own: Settings,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    uploads = [_upload(patient, [T0 + i * 100, T0 + i * 100 + 50]) for i in range(4)]
    await _produce(own, [contract.encode_upload(u) for u in uploads], key=patient.encode())
    outlet = _Outlet(own.database_url)
    probe = localinfra.free_port()
    sink_settings = own.model_copy(
        update={"database_url": outlet.url(own.database_url), "probe_port": probe}
    )
    topic = own.topic(contract.READINGS)
    consumed = sample("vitals_consumed_records_total", stage=STAGE)

    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{probe}") as http,
        group_offsets(own, own.sink_group) as offsets,
        timescale_sink(sink_settings),
    ):

        async def readyz(status: int) -> bool:
            try:
                return (await http.get("/readyz")).status_code == status
            except httpx.TransportError:  # the probe server is not up yet
                return False

        await until(lambda: readyz(503), "/readyz to answer 503")
        # Polled, failed, rewound and polled again: the batch is retried, not dropped.
        await until(
            lambda: (
                sample("vitals_consumed_records_total", stage=STAGE) >= consumed + 2 * len(uploads)
            ),
            "the batch to be retried",
        )
        assert await committed(offsets, topic) == {}
        assert (await http.get("/readyz")).status_code == 503
        metrics = (await http.get("/metrics")).text
        assert f'vitals_sink_dependencies_up{{stage="{STAGE}"}} 0.0' in metrics

        await outlet.open()  # the database is back
        try:
            await sink_committed(own)
            await until(lambda: readyz(200), "/readyz to answer 200 again")
        finally:
            await outlet.close()

    stored = await _stored(own.database_url, patient)
    assert sorted(str(r["upload_id"]) for r in stored) == sorted(
        u.upload_id for u in uploads for _ in range(2)
    )


async def test_the_command_migrates_on_start_serves_probes_and_stops_on_sigterm(
    own: Settings, pg_server: str, tmp_path: Path
) -> None:
    name = f"vitals_cli_{uuid.uuid4().hex[:10]}"
    url = localinfra.create_database(pg_server, name, exist_ok=False)
    port = localinfra.free_port()
    patient = f"p-{uuid.uuid4().hex[:8]}"
    await _produce(
        own, [contract.encode_upload(_upload(patient, [T0, T0 + 1]))], key=patient.encode()
    )
    env = {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
        "VITALS_DATABASE_URL": url,
        "VITALS_TOPIC_PREFIX": own.topic_prefix,
        "VITALS_SINK_GROUP": own.sink_group,
        "VITALS_MIGRATE_ON_START": "true",
        "VITALS_PROBE_PORT": str(port),
    }
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited in a thread
            [sys.executable, "-m", "vitalsctl.cli", "sink", "timescale"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        migrated = own.model_copy(update={"database_url": url})
        await sink_committed(migrated)
        assert len(await _stored(url, patient)) == 2  # the table exists: it migrated
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, WAIT_S)
        assert code == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        localinfra.drop_database(pg_server, name)


# --- NEWS2 scores (vitals.news2 -> news2_scores) ---------------------------------------


def _score(patient: str, t: int, total: int, computed: int) -> contract.News2Score:
    return contract.News2Score(
        patient_id=patient, t=t, news2=total, band="medium" if total >= 5 else "low",
        red=False, partial=True, scale=1,
        parameters={"heart_rate": contract.ScoredParameter(2, 115.0, 30_000),
                    "resp_rate": contract.ScoredParameter(total - 2, 23.0, 0)},
        computed=computed,
    )  # fmt: skip


async def test_news2_scores_are_stored_once_replaced_by_recomputation_and_bad_ones_parked(
    own: Settings,
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    first, second = _score(patient, T0, 3, T0 + 1), _score(patient, T0 + 60_000, 4, T0 + 60_001)
    recomputed = _score(patient, T0, 5, T0 + 90_000)  # late data re-scored T0
    bad = orjson.dumps({**orjson.loads(contract.encode_news2_score(first)), "band": "severe"})
    values = [contract.encode_news2_score(s) for s in (first, second, first, recomputed)]
    producer = AIOKafkaProducer(bootstrap_servers=own.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = own.topic(contract.NEWS2_SCORES)
        for value in [*values, bad]:
            await producer.send_and_wait(topic, value, key=patient.encode())
    finally:
        await producer.stop()
    # Readings share the sink: an upload in the same run is stored as before.
    await _produce(own, [contract.encode_upload(_upload(patient, [T0]))], key=patient.encode())

    async def stored() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(own.database_url)
        try:
            return await conn.fetch(
                "SELECT t, news2, band, parameters::text AS p, computed_at FROM news2_scores"
                " WHERE patient_id = $1 ORDER BY t",
                patient,
            )
        finally:
            await conn.close()

    async with timescale_sink(own):
        await sink_committed(own)
        letters = await _dead_letters(own, 1)
        await until(
            lambda: _rows_are(stored, [(from_ms(T0), 5), (from_ms(T0 + 60_000), 4)]),
            "both scores, the first one re-computed",
        )

    rows = await stored()
    assert rows[0]["computed_at"] == from_ms(T0 + 90_000) and rows[0]["band"] == "medium"
    assert orjson.loads(rows[1]["p"])["heart_rate"] == {
        "points": 2, "value": 115.0, "age_ms": 30_000,
    }  # fmt: skip
    assert len(await _stored(own.database_url, patient)) == 1
    [letter] = [x for x in letters if x["origin"]["topic"] == own.topic(contract.NEWS2_SCORES)]
    assert letter["error"].startswith("ContractError") and letter["stage"] == STAGE


async def _rows_are(
    fetch: Callable[[], Awaitable[list[asyncpg.Record]]], expected: list[tuple[object, ...]]
) -> bool:
    return [(r["t"], r["news2"]) for r in await fetch()] == expected

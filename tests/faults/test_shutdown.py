"""Graceful shutdown under load: SIGTERM of each stage, then the same checks as every fault.

The gateway stops accepting and answers the requests in flight (by its own count, no
request it started to read goes unanswered); a consumer finishes its batch, commits and
exits 0, and what it committed is durable.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from tests.faults.checks import TopicReader, stored_counts
from tests.faults.conftest import SCENARIOS
from tests.faults.load import NO_ANSWER, LoadPlan
from tests.faults.scenario import after, restart, run
from tests.faults.stages import Stages
from vitals import contract
from vitals.settings import Settings

pytestmark = pytest.mark.faults

SCENARIOS += [
    "SIGTERM gateway",
    "SIGTERM processor",
    "SIGTERM sink timescale",
    "SIGTERM sink alerts",
]
EXIT_WITHIN_S = 20.0  # shutdown grace (10 s) plus the process's own stop


async def test_gateway_sigterm_answers_requests_in_flight(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader
) -> None:
    codes: list[int] = []
    stops: list[dict] = []
    log_file = pipeline.logs / "gateway.log"

    async def inject() -> float:
        await after(3)
        mark = log_file.stat().st_size
        codes.append(await asyncio.to_thread(pipeline.terminate, "gateway", EXIT_WITHIN_S))
        stops.extend(_log_records(log_file, mark, "server stopped"))
        return await restart(pipeline, "gateway")

    # A new connection per request, so that connections keep arriving while it stops.
    plan = LoadPlan(keep_alive=False)
    verdict, generator = await run(
        "SIGTERM gateway",
        "gateway SIGTERM at 3 s, restarted once it exited",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        plan=plan,
    )
    assert codes == [0]
    # The gateway's own account: every request it started to read was answered in full.
    assert len(stops) == 1, stops
    assert stops[0]["requests_started"] > 0
    assert stops[0]["requests_unanswered"] == 0, stops[0]
    # Seen from the clients, a connection still in the listen backlog when the socket
    # closed is reset unread: at most one per client (each has one request in flight),
    # and the retry with the same body was stored once (the ledger checks in `verdict`).
    dropped = sum(u.attempts.count(NO_ANSWER) for u in generator.ledger.uploads)
    assert dropped <= plan.patients + 1, f"{dropped} requests got no answer"
    assert not verdict.problems, verdict.problems


def _log_records(path: Path, offset: int, msg: str) -> list[dict]:
    """The JSON log records with this message written to `path` after `offset`."""
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().splitlines()
    records = [orjson.loads(line) for line in lines if line.startswith(b"{")]
    return [r for r in records if r.get("msg") == msg]


async def _durable_below_commit(settings: Settings, prefix: str) -> tuple[int, int]:
    """(messages below the sink's committed offsets, of them with readings not stored)."""
    topic = settings.topic(contract.READINGS)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        committed = await admin.list_consumer_group_offsets(settings.sink_group, partitions=tps)
        limits = {tp: committed[tp].offset for tp in tps if tp in committed}
        reader.assign(list(limits))
        await reader.seek_to_beginning(*limits)
        stored = await stored_counts(settings.database_url, prefix)
        below = missing = 0
        pending = {tp for tp, end in limits.items() if end > 0}
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for tp, records in (await reader.getmany(timeout_ms=500)).items():
                for r in records:
                    if r.offset >= limits[tp]:
                        pending.discard(tp)
                        break
                    try:
                        upload = contract.decode_upload(r.value)
                    except Exception:  # noqa: BLE001 - poison from another scenario
                        continue
                    if not upload.patient_id.startswith(prefix):
                        continue
                    below += 1
                    keys = {(upload.patient_id, x.metric, x.t) for x in upload.readings}
                    missing += any(stored[k] == 0 for k in keys)
                if records and records[-1].offset + 1 >= limits[tp]:
                    pending.discard(tp)
        assert not pending, "could not read the topic up to the committed offsets"
        return below, missing
    finally:
        await reader.stop()
        await admin.close()


@pytest.mark.parametrize("stage", ["processor", "sink-timescale", "sink-alerts"])
async def test_consumer_sigterm_finishes_batch_and_commits(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, stage: str
) -> None:
    codes: list[int] = []
    durable: list[tuple[int, int]] = []
    at = 5 if stage == "sink-alerts" else 3
    prefix = f"p-{uuid.uuid4().hex[:6]}-"
    log_path = pipeline.logs / f"{stage}.log"
    log_from = log_path.stat().st_size if log_path.exists() else 0

    async def inject() -> float:
        await after(at)
        codes.append(await asyncio.to_thread(pipeline.terminate, stage, EXIT_WITHIN_S))
        if stage == "sink-timescale":  # before anything else can write: was it durable?
            durable.append(await _durable_below_commit(fault_settings, prefix))
        return await restart(pipeline, stage)

    verdict, _ = await run(
        "SIGTERM " + stage.replace("-", " "),
        f"{stage} SIGTERM at {at} s, restarted once it exited",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        prefix=prefix,
    )
    assert codes == [0], f"{stage} exited {codes} on SIGTERM"
    log = log_path.read_bytes()[log_from:].decode()  # this scenario's part of the log
    assert '"msg":"stopped"' in log and "Traceback" not in log
    if durable:
        below, missing = durable[0]
        assert below > 0, "the sink committed nothing of the load before SIGTERM"
        assert missing == 0, f"{missing} committed uploads were not in the database"
    assert not verdict.problems, verdict.problems

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

from tests.faults.checks import TopicReader, stored_counts
from tests.faults.conftest import SCENARIOS
from tests.faults.infra import Broker
from tests.faults.load import NO_ANSWER, LoadPlan
from tests.faults.scenario import after, restart, run
from tests.support.stages import Stages
from vitals import contract, kafka
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
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, broker: Broker
) -> None:
    """Requests are certainly in flight at SIGTERM: the broker is frozen just before (for
    less than the produce timeout), so uploads wait for their acknowledgement. The gateway
    stops accepting, and every request it had started is answered (202 once the broker
    resumes, or 503 at the produce timeout) before it exits."""
    codes: list[int] = []
    stopping: list[dict] = []
    stops: list[dict] = []
    log_file = pipeline.logs / "gateway.log"

    async def inject() -> float:
        await after(3)
        mark = log_file.stat().st_size
        broker.freeze()
        await asyncio.sleep(0.7)  # uploads pile up waiting for acks
        terminated = asyncio.create_task(
            asyncio.to_thread(pipeline.terminate, "gateway", EXIT_WITHIN_S)
        )
        await asyncio.sleep(0.8)
        broker.thaw()
        codes.append(await terminated)
        stopping.extend(_log_records(log_file, mark, "stopping"))
        stops.extend(_log_records(log_file, mark, "server stopped"))
        return await restart(pipeline, "gateway")

    # A new connection per request, so that connections keep arriving while it stops.
    plan = LoadPlan(keep_alive=False)
    verdict, generator = await run(
        "SIGTERM gateway",
        "broker frozen at 3 s for 1.5 s; gateway SIGTERM 0.7 s into it, restarted once it exited",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        plan=plan,
    )
    assert codes == [0]
    # The gateway's own account: requests were in flight when SIGTERM came, and every
    # request it started to read was answered in full.
    assert len(stopping) == 1 and stopping[0]["requests_in_flight"] > 0, stopping
    assert len(stops) == 1, stops
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


async def _commit_matches_database(settings: Settings, prefix: str) -> tuple[int, int, int]:
    """For the scenario's messages on vitals.readings, against the sink's committed offsets:
    (messages below them, of those with readings not stored, messages at or above them whose
    readings are all stored). A graceful stop commits what it wrote: both counts are 0."""
    topic = settings.topic(contract.READINGS)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    try:
        tps = await kafka.partitions(reader, topic)
        committed = await admin.list_consumer_group_offsets(settings.sink_group, partitions=tps)
        limits = {tp: committed[tp].offset if tp in committed else 0 for tp in tps}
        ends = await reader.end_offsets(tps)
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        stored = await stored_counts(settings.database_url, prefix)
        below = missing = uncommitted = 0
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for tp, records in (await reader.getmany(timeout_ms=500)).items():
                for r in records:
                    if r.offset >= ends[tp]:
                        break
                    try:
                        upload = contract.decode_upload(r.value)
                    except Exception:  # noqa: BLE001 - poison from another scenario
                        continue
                    if not upload.patient_id.startswith(prefix):
                        continue
                    keys = {(upload.patient_id, x.metric, x.t) for x in upload.readings}
                    if r.offset < limits[tp]:
                        below += 1
                        missing += any(stored[k] == 0 for k in keys)
                    else:
                        uncommitted += all(stored[k] > 0 for k in keys)
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
        assert not pending, "could not read the topic up to its end offsets"
        return below, missing, uncommitted
    finally:
        await reader.stop()
        await admin.close()


@pytest.mark.parametrize("stage", ["processor", "sink-timescale", "sink-alerts"])
async def test_consumer_sigterm_finishes_batch_and_commits(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, stage: str
) -> None:
    codes: list[int] = []
    durable: list[tuple[int, int, int]] = []
    at = 5 if stage == "sink-alerts" else 3
    prefix = f"p-{uuid.uuid4().hex[:6]}-"
    log_path = pipeline.logs / f"{stage}.log"
    log_from = log_path.stat().st_size if log_path.exists() else 0

    async def inject() -> float:
        await after(at)
        codes.append(await asyncio.to_thread(pipeline.terminate, stage, EXIT_WITHIN_S))
        if stage == "sink-timescale":  # before anything else can write: was it durable?
            durable.append(await _commit_matches_database(fault_settings, prefix))
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
        below, missing, uncommitted = durable[0]
        assert below > 0, "the sink committed nothing of the load before SIGTERM"
        assert missing == 0, f"{missing} committed uploads were not in the database"
        assert uncommitted == 0, f"{uncommitted} uploads written but left uncommitted at exit"
    assert not verdict.problems, verdict.problems

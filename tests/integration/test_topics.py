"""`vitals topics create` on the session's broker: the configs it sets, how it reports a
topic that differs, and whether producers are idempotent (asked of the broker)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaTimeoutError

from tests.conftest import test_broker_kind
from vitals import contract, kafka
from vitals.errors import ConfigError
from vitals.settings import Settings

pytestmark = pytest.mark.integration


async def test_created_topics_have_what_the_pipeline_needs(settings: Settings) -> None:
    # The `settings` fixture ran create_topics: nothing differs.
    assert await kafka.topic_differences(settings) == []


async def test_a_topic_that_differs_is_reported_and_the_command_exits_1(
    settings: Settings,
) -> None:
    own = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "x."})
    readings = own.topic(contract.READINGS)
    admin = AIOKafkaAdminClient(bootstrap_servers=own.kafka_bootstrap)
    await admin.start()
    try:  # made by hand before the pipeline's command: one partition, an hour's retention
        await admin.create_topics(
            [NewTopic(readings, 1, 1, topic_configs={"retention.ms": "3600000"})]
        )
    finally:
        await admin.close()
    env = {
        **os.environ,
        "VITALS_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
        "VITALS_TOPIC_PREFIX": own.topic_prefix,
        "VITALS_TOPIC_PARTITIONS": str(own.topic_partitions),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "vitalsctl.cli", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    differs = [line for line in done.stderr.splitlines() if line.startswith("differs: ")]
    assert f"differs: {readings}: 1 partitions, the pipeline is set up for 3" in differs[0]
    # tansu does not report retention.ms: a config the broker does not report is no
    # difference (vitals/kafka.py).
    if test_broker_kind()[0] == "kafka":
        assert any("retention.ms is 3600000, the pipeline needs 604800000" in d for d in differs)
    # The others were created as the pipeline needs them.
    assert all(readings in d for d in differs), differs


async def test_more_retention_than_asked_is_no_difference(settings: Settings) -> None:
    if test_broker_kind()[0] != "kafka":
        pytest.skip("tansu does not change topic configs")
    name = settings.topic(contract.ALERTS)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        configs = {"retention.ms": "-1"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)])
    finally:
        await admin.close()
    assert await kafka.topic_differences(settings) == []


async def test_producers_are_idempotent_where_the_broker_grants_producer_ids(
    settings: Settings,
) -> None:
    granted = await kafka.idempotence(settings.model_copy(update={"kafka_idempotence": "auto"}))
    assert granted == (test_broker_kind()[0] == "kafka")  # tansu refuses InitProducerId
    assert (
        await kafka.idempotence(settings.model_copy(update={"kafka_idempotence": "off"})) is False
    )
    with pytest.raises(ConfigError, match="auto, on or off"):
        await kafka.idempotence(settings.model_copy(update={"kafka_idempotence": "maybe"}))


async def test_a_port_that_never_answers_kafka_is_a_clear_error_within_the_bound(
    settings: Settings,
) -> None:
    """A listener that accepts connections and never answers (a frozen broker, the wrong
    service on the port): the question about producer ids ends at its bound, not at
    aiokafka's 40 s per request, and says what happened and what to set."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # reads what the client sends; never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent_settings = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "kafka_idempotence": "auto"}
    )
    try:
        with pytest.raises(KafkaTimeoutError) as raised:
            await kafka.idempotence(silent_settings, timeout_s=1.0)
    finally:
        server.close()
        for writer in held:
            writer.close()
    assert raised.value.args == (
        f"the cluster at 127.0.0.1:{port} neither granted nor refused a producer id within "
        "1 s (no answer); kafka_idempotence=on or off decides without asking",
    )
    assert held, "the client never connected: the bound was not what ended it"


async def test_topics_that_get_no_leader_are_a_clear_error_within_the_bound(
    settings: Settings,
) -> None:
    """Waiting for leaders ends at its bound with the topics named: here a topic that was
    never created (the broker does not create topics on request), so it never gets one."""
    names = [settings.topic(contract.READINGS), settings.topic("never-created")]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await kafka.until_led(admin, names[:1], timeout_s=10.0)  # the created one is led
        with pytest.raises(KafkaTimeoutError, match="topics without a leader after 1 s"):
            await kafka.until_led(admin, names, timeout_s=1.0)
        (missing,) = await admin.describe_topics(names[1:])
    finally:
        await admin.close()
    assert missing["error_code"] != 0  # still no topic, and no leader, after the wait

"""Kafka client set-up shared by every stage: producers, consumers, topics, dead letters."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaTimeoutError, UnsupportedVersionError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import Counter

from vitals import contract
from vitals.errors import ConfigError
from vitals.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "vitals_dead_letters_total", "Messages parked in the dead-letter topic", ["stage"]
)


def producer(
    settings: Settings, *, idempotent: bool = False, **overrides: object
) -> AIOKafkaProducer:
    """A producer with acks=all: 202 / commit only after every in-sync replica has the
    message. `idempotent` (what `idempotence()` found the cluster grants) adds that a
    retried produce is never written twice nor out of order within a partition; without
    it such duplicates are harmless, as every write downstream is idempotent."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": idempotent,
        "linger_ms": 2,
        "max_request_size": settings.max_decompressed_bytes * 2,
        "request_timeout_ms": 30_000,
    }
    options.update(security_options(settings))
    options.update(overrides)
    return AIOKafkaProducer(**options)


class KeyHashPartitioner:
    """aiokafka's DefaultPartitioner (murmur2 of the key, as the Java client), with each
    key's hash remembered: murmur2 is pure Python, and a producer keyed by patient sees
    the same few keys again and again. Same partition for every key as the default."""

    def __init__(self, max_keys: int = 65_536) -> None:
        self.max_keys = max_keys
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return _DEFAULT_PARTITIONER(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


_DEFAULT_PARTITIONER = DefaultPartitioner()


async def stop_producer(producer: AIOKafkaProducer, flush_s: float) -> None:
    """Stop `producer`, flushing what is in flight for at most `flush_s`. An idempotent
    producer retries a batch until the broker answers (it never expires one, so that its
    sequence numbers stay whole), so with the brokers gone its stop() would never end.
    Whatever is still unsent then was never acknowledged, so nobody was told it was kept
    (the gateway answered 503 for it): it is dropped, and said so."""
    try:
        async with asyncio.timeout(flush_s):
            await producer.stop()
    except TimeoutError:
        log.warning("kafka unreachable at stop: unacknowledged messages dropped")
        # stop() timed out inside its flush: end the sender and the connections it left.
        await producer._sender.close()  # noqa: SLF001 - aiokafka has no abort()
        await producer.client.close()


# Errors a broker answers InitProducerId with while its coordinators start: ask again.
_NOT_YET = {14, 15, 16}  # COORDINATOR_LOAD_IN_PROGRESS, _NOT_AVAILABLE, NOT_COORDINATOR
_GRANTS: dict[str, bool] = {}  # bootstrap -> whether that cluster grants producer ids


async def idempotence(settings: Settings, timeout_s: float = 15.0) -> bool:
    """Whether producers should be idempotent on this cluster: `kafka_idempotence` when it
    is `on` or `off`; on `auto`, asked of the cluster itself (by capability, not by name):
    it grants a producer id (InitProducerId) or it does not. Apache Kafka does, once its
    coordinators have loaded; tansu lists the API but answers UNKNOWN_SERVER_ERROR. The
    answer is remembered per bootstrap; a broker that cannot be reached raises."""
    mode = settings.kafka_idempotence
    if mode in ("on", "off"):
        return mode == "on"
    if mode != "auto":
        raise ConfigError(f"kafka_idempotence must be auto, on or off, not {mode!r}")
    known = _GRANTS.get(settings.kafka_bootstrap)
    if known is not None:
        return known
    client = AIOKafkaClient(
        bootstrap_servers=settings.kafka_bootstrap, **security_options(settings)
    )
    last: int | None = None  # the last "not yet" answer, for the error
    try:
        # One bound over the whole question: a broker still loading its coordinators
        # answers "not yet" again and again, and one that accepts connections but never
        # answers Kafka would otherwise hold each request for aiokafka's 40 s.
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()
            while True:
                node = client.get_random_node()
                answer = await client.send(node, InitProducerIdRequest(None, 60_000))
                if answer.error_code not in _NOT_YET:
                    break
                last = answer.error_code
                await asyncio.sleep(0.2)
    except TimeoutError:
        why = "no answer" if last is None else f"still loading: {for_code(last).__name__}"
        raise KafkaTimeoutError(
            f"the cluster at {settings.kafka_bootstrap} neither granted nor refused a "
            f"producer id within {timeout_s:g} s ({why}); kafka_idempotence=on or off "
            "decides without asking"
        ) from None
    finally:
        await client.close()
    granted = answer.error_code == 0
    _GRANTS[settings.kafka_bootstrap] = granted
    log.info(
        "idempotent producers" if granted else "no idempotent producers on this broker",
        extra={"init_producer_id_error": answer.error_code},
    )
    return granted


async def start_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A started producer, idempotent where the cluster grants it (`idempotence()`)."""
    made = producer(settings, idempotent=await idempotence(settings), **overrides)
    try:
        await made.start()
    except BaseException:
        await made.stop()
        raise
    return made


async def offset_at(consumer: AIOKafkaConsumer, tp: TopicPartition, ms: int) -> int:
    """The first offset of `tp` with a timestamp at or after `ms` (offsets-for-times); the
    partition's beginning when the broker has no answer (tansu answers none or 0), which
    reads more than needed but never misses a record."""
    try:
        found = (await consumer.offsets_for_times({tp: max(0, ms)})).get(tp)
    except UnsupportedVersionError:
        found = None
    if found is not None:
        return int(found.offset)
    return int((await consumer.beginning_offsets([tp]))[tp])


async def partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of `topic`, in order, asked of the cluster if the consumer does not
    know them yet. aiokafka's consumer learns only the topics it tracks (its bootstrap
    asks Metadata for none, which Apache Kafka answers with none; tansu answers every
    topic), so a consumer that assigns partitions by hand must ask for the topic first.
    aiokafka has no public call for that: `add_topic` of its client is the one it uses."""
    known = consumer.partitions_for_topic(topic)
    if not known:
        await consumer._client.add_topic(topic)  # noqa: SLF001 - see above
        known = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(known or ())]


def consumer(settings: Settings, group_id: str | None, **overrides: object) -> AIOKafkaConsumer:
    """A consumer of `group_id`'s (None: no group, partitions assigned by hand)."""
    # Offsets are committed by hand, after the output is durable (at-least-once).
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # A quiet partition answers a fetch after this long: it bounds each hop's added
        # latency on the alert path (aiokafka's default is 500 ms).
        "fetch_max_wait_ms": 100,
        "max_partition_fetch_bytes": settings.max_decompressed_bytes * 2,
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    options.update(security_options(settings))
    options.update(overrides)
    return AIOKafkaConsumer(**options)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def security_options(settings: Settings) -> dict[str, object]:
    """TLS and SASL settings for every aiokafka client; nothing extra for PLAINTEXT."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"kafka_security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
        )
    if protocol.startswith("SASL_"):
        if not settings.kafka_sasl_mechanism:
            raise ConfigError(f"{protocol} needs kafka_sasl_mechanism")
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


DAY_MS = 86_400_000
# How long each topic keeps messages. vitals.readings must hold at least the processor's
# replay horizon (longest window + allowed lateness: 2 h 15 min with the built-in rules)
# plus a margin; seven days also cover a sink stopped over a long weekend, which then
# catches up from Kafka. The public alerts and the dead letters are small and read by
# people and by subscribers that may be down for a while: thirty days.
RETENTION_MS = {
    contract.READINGS: 7 * DAY_MS,
    contract.DETECTIONS: 7 * DAY_MS,
    contract.NEWS2_SCORES: 7 * DAY_MS,
    contract.ALERTS: 30 * DAY_MS,
    contract.DEADLETTER: 30 * DAY_MS,
    contract.PROCESSOR_STATE: -1,  # compacted: the latest record of each key is kept
}
# Topics that keep the latest value per key rather than every message.
COMPACTED = {contract.PROCESSOR_STATE}


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """The configs the pipeline sets on each of its topics (`topics create`), and checks
    on topics that exist. Every topic is keyed and appended to (`delete`, never
    `compact`: each reading and each alert state is a message of its own), except the
    processor's checkpoints, where only each key's latest record matters. Nothing relies
    on compaction having run (a broker without it only keeps more): the restore reads a
    partition to its end and takes each key's latest record."""
    return {
        "cleanup.policy": "compact" if topic in COMPACTED else "delete",
        "retention.ms": str(RETENTION_MS[topic]),
        # One upload is one message: the broker must take the largest upload we accept.
        "max.message.bytes": str(settings.max_decompressed_bytes * 2),
        # With replicas, acks=all is only durable if a write needs two of them: with one
        # of three brokers down writes go on, with two down the gateway answers 503.
        "min.insync.replicas": str(min(2, settings.topic_replication)),
    }


async def create_topics(settings: Settings) -> list[str]:
    """Create every pipeline topic that does not exist yet, with `topic_configs`; returns
    the ones created. Topics that exist are checked: what differs is logged and returned
    by `topic_differences`."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **security_options(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in contract.ALL_TOPICS if settings.topic(t) not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        settings.topic(t),
                        settings.topic_partitions,
                        settings.topic_replication,
                        topic_configs=topic_configs(settings, t),
                    )
                    for t in missing
                ]
            )
            log.info("topics created", extra={"topics": [settings.topic(t) for t in missing]})
            await until_led(admin, [settings.topic(t) for t in missing])
        return [settings.topic(t) for t in missing]
    finally:
        await admin.close()


async def until_led(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30) -> None:
    """Wait until every partition of `names` has a leader. A real cluster answers
    CreateTopics once its controller has the topic; its brokers learn of it a moment
    later, and a client that asks in between finds no partitions to produce to."""
    try:
        async with asyncio.timeout(timeout_s):  # also bounds a describe that never returns
            while True:
                described = await admin.describe_topics(names)
                if all(
                    t["error_code"] == 0
                    and t["partitions"]
                    and all(p["leader"] >= 0 for p in t["partitions"])
                    for t in described
                ):
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise KafkaTimeoutError(f"topics without a leader after {timeout_s:g} s: {names}") from None


async def topic_differences(settings: Settings) -> list[str]:
    """What differs between the pipeline's topics on the cluster and what the pipeline
    needs (partitions, replication, `topic_configs`), one sentence each. A config the
    broker does not report (tansu lacks some) is not a difference."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **security_options(settings)
    )
    await admin.start()
    try:
        names = [settings.topic(t) for t in contract.ALL_TOPICS]
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        answers = await admin.describe_configs(resources)
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for answer in answers:
        for resource in answer.resources:
            _, _, _, name, entries = resource[:5]
            found[name] = {entry[0]: entry[1] for entry in entries}
    differences = []
    for topic, name in zip(contract.ALL_TOPICS, names, strict=True):
        partitions = described.get(name, {}).get("partitions") or []
        if not partitions:
            differences.append(f"{name}: missing")
            continue
        if len(partitions) != settings.topic_partitions:
            differences.append(
                f"{name}: {len(partitions)} partitions, the pipeline is set up for "
                f"{settings.topic_partitions} (VITALS_TOPIC_PARTITIONS)"
            )
        replicas = min(len(p["replicas"]) for p in partitions)
        if replicas < settings.topic_replication:
            differences.append(
                f"{name}: replication factor {replicas}, needs {settings.topic_replication}"
            )
        have = found.get(name, {})
        for key, wanted in topic_configs(settings, topic).items():
            if key in have and not _same_config(key, have[key], wanted):
                differences.append(f"{name}: {key} is {have[key]}, the pipeline needs {wanted}")
    return differences


def _same_config(key: str, have: str, wanted: str) -> bool:
    # Retention and sizes are floors: more is fine (-1 keeps forever).
    if key in ("retention.ms", "max.message.bytes"):
        return int(have) == -1 or int(have) >= int(wanted)
    return have == wanted


async def park(
    producer: AIOKafkaProducer,
    settings: Settings,
    stage: str,
    record: ConsumerRecord,
    error: Exception,
) -> None:
    """Put an undecodable message in the dead-letter topic with its error and origin."""
    await producer.send_and_wait(
        settings.topic(contract.DEADLETTER),
        contract.encode_deadletter(
            stage=stage,
            error=f"{type(error).__name__}: {error}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
        ),
        key=record.key,
    )
    DEAD_LETTERS.labels(stage).inc()
    log.warning(
        "message parked",
        extra={
            "stage": stage,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "error": type(error).__name__,
        },
    )

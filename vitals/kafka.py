"""Kafka client set-up shared by every stage: producers, consumers, topics, dead letters."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnsupportedVersionError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import Counter

from vitals import contract
from vitals.errors import ConfigError
from vitals.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "vitals_dead_letters_total", "Messages parked in the dead-letter topic", ["stage"]
)


def producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    # acks=all: 202 / commit only after every in-sync replica has the message.
    # No idempotent producer: tansu does not implement InitProducerId; duplicates from
    # producer retries are harmless because every write downstream is idempotent.
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": False,
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


def consumer(settings: Settings, group_id: str, **overrides: object) -> AIOKafkaConsumer:
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


def topic_configs(settings: Settings) -> dict[str, str]:
    # One upload is one message: the broker must take the largest upload we accept.
    # With replicas, acks=all is only durable if a write needs two of them.
    return {
        "max.message.bytes": str(settings.max_decompressed_bytes * 2),
        "min.insync.replicas": str(min(2, settings.topic_replication)),
    }


async def create_topics(settings: Settings) -> list[str]:
    """Create every pipeline topic that does not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **security_options(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(name) for name in contract.ALL_TOPICS]
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        settings.topic_partitions,
                        settings.topic_replication,
                        topic_configs=topic_configs(settings),
                    )
                    for name in missing
                ]
            )
            log.info("topics created", extra={"topics": missing})
        return missing
    finally:
        await admin.close()


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

"""One Kafka hop on a quiet topic: produce (acks=all) → a consumer reads it, with the
consumer settings every stage uses (vitals.kafka.consumer) and with a short fetch wait.

On a quiet topic (vitals.detections, vitals.alerts) a fetch that finds nothing waits
fetch_max_wait_ms at the broker; this shows what that costs each hop of an alert's path.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.report import Row
from bench.stats import Summary, percentile
from vitals import kafka
from vitals.settings import Settings

SHORT_WAIT_MS = 50


async def _hop_ms(settings: Settings, topic: str, messages: int, **overrides: object) -> float:
    producer = kafka.producer(settings)
    consumer = kafka.consumer(settings, None, auto_offset_reset="latest", **overrides)
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe([topic])
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        await consumer.seek_to_end()
        latencies = []
        for i in range(messages):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"{}", key=str(i).encode())
            while not await consumer.getmany(timeout_ms=2_000):
                pass
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.03)  # quiet between messages, as detections are
        return percentile(latencies, 50)
    finally:
        await consumer.stop()
        await producer.stop()


async def measure(settings: Settings, reps: int, messages: int) -> tuple[list[float], list[float]]:
    topic = settings.topic("hop")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    default, short = [], []
    for _ in range(reps):
        default.append(await _hop_ms(settings, topic, messages))
        short.append(await _hop_ms(settings, topic, messages, fetch_max_wait_ms=SHORT_WAIT_MS))
    return default, short


def run(settings: Settings, reps: int, messages: int = 15) -> list[Row]:
    default, short = asyncio.run(measure(settings, reps, messages))
    return [
        Row(
            "end to end",
            "one Kafka hop on a quiet topic, p50",
            "ms",
            Summary(tuple(default)),
            Summary(tuple(short)),
            f"fetch_max_wait_ms={SHORT_WAIT_MS}",
            note="produce (acks=all) → read, with the stages' consumer settings vs a short wait",
        )
    ]

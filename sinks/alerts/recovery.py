"""Alerts that reached vitals.alerts but were never marked published: found, not resent.

The sink publishes, awaits the acknowledgements, then marks the rows published. A sink
that dies between the two (or loses the database there) leaves rows unmarked whose alerts
are already on the topic; publishing them again would page twice. So a sink, before it
consumes, reads the topic from the oldest unmarked row's detection time on and marks the
rows it finds there with the time the document carries. The rest stay unmarked: their
detections were never committed, so they come back and are published then.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import TypeVar

import asyncpg
import orjson
from aiokafka.structs import TopicPartition

from sinks.alerts.store import Key, mark_published
from vitals import contract, kafka
from vitals.settings import Settings

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

READ_TIMEOUT_S = 120.0  # reading the alerts topic's tail; alerts are few

_UNMARKED = """
SELECT alert_id, state, episode_start, detected_at FROM alerts
WHERE published_at IS NULL AND NOT suppressed
"""


async def reconcile(settings: Settings, conn: asyncpg.Connection) -> int:
    """Mark the unmarked rows whose alert is on the topic; how many were marked."""
    rows = await conn.fetch(_UNMARKED)
    if not rows:
        return 0
    unmarked = {(r["alert_id"], r["state"], r["episode_start"]) for r in rows}
    since = min(r["detected_at"] for r in rows)  # publication always follows detection
    found = await on_topic(settings, unmarked, int(since.timestamp() * 1000), _key)
    marked = 0
    for published_at, keys in found.items():
        marked += await mark_published(conn, keys, published_at)
    log.info(
        "unmarked alerts reconciled",
        extra={"stage": "sink-alerts", "unmarked": len(unmarked), "already_published": marked},
    )
    return marked


async def on_topic(
    settings: Settings,
    unmarked: set[K],
    since_ms: int,
    key_of: Callable[[bytes | None], tuple[K, datetime] | None],
) -> dict[datetime, list[K]]:
    """The unmarked keys found on vitals.alerts (`key_of` reads a document's key and
    published_at, None for documents of another kind), by their published_at. Shared with
    the human states' publisher (escalation.py)."""
    topic = settings.topic(contract.ALERTS)
    consumer = kafka.consumer(settings, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        parts = await kafka.partitions(consumer, topic)
        if not parts:
            return {}
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)  # later alerts are not this sink's doing
        for tp in parts:
            consumer.seek(tp, await kafka.offset_at(consumer, tp, since_ms))
        found: dict[datetime, list[K]] = {}
        # A broker that stops answering fails the batch (TimeoutError): it is retried.
        async with asyncio.timeout(READ_TIMEOUT_S):
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for record in (r for part in batches.values() for r in part):
                    if record.offset >= ends[TopicPartition(record.topic, record.partition)]:
                        continue
                    key = key_of(record.value)
                    if key is not None and key[0] in unmarked:
                        found.setdefault(key[1], []).append(key[0])
        return found
    finally:
        await consumer.stop()


def _key(raw: bytes | None) -> tuple[Key, datetime] | None:
    """(key, published_at) of a public alert document; None for anything else on the topic."""
    try:
        doc = orjson.loads(raw or b"")
        if doc["schema"] != contract.ALERT_SCHEMA:  # v2: the human states (escalation.py)
            return None
        key = (
            uuid.UUID(doc["alert_id"]),
            doc["state"],
            datetime.fromisoformat(doc["episode_start"]),
        )
        return key, datetime.fromisoformat(doc["published_at"])
    except (ValueError, KeyError, TypeError):
        return None

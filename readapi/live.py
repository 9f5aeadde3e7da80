"""The console's live feed: `vitals.alerts` and `vitals.news2` read by one Kafka consumer
inside the read API process and fanned out to the open event streams (live_routes.py).

No consumer group and nothing committed: every replica reads every partition from the end
when it starts, because a stream starts with the board's snapshot from the database and
needs only what happens after it. Each stream has a bounded queue; the consumer only ever
puts without waiting, so a client that cannot keep up is dropped (told why, when it reads
again) and never holds up the consumer or the other streams.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from vitals import contract, kafka
from vitals.errors import ContractError
from vitals.settings import Settings

log = logging.getLogger(__name__)

STREAMS = Gauge("vitals_api_live_streams", "Console event streams open")
EVENTS = Counter(
    "vitals_api_live_events_total", "Messages read by the live feed, by kind", ["kind"]
)
DROPPED = Counter(
    "vitals_api_live_streams_closed_total", "Console event streams closed by the API, by reason",
    ["reason"],
)  # fmt: skip
FEED_UP = Gauge("vitals_api_live_feed_up", "1 while the live feed reads the alert and NEWS2 topics")
POLL_MS = 500


@dataclass(frozen=True, slots=True)
class Event:
    """One change for the board: `kind` "alert" (a public alert, v1 or v2) or "news2"."""

    kind: str
    patient_id: str
    data: dict[str, Any]


@dataclass(eq=False, slots=True)
class Subscriber:
    queue: asyncio.Queue[Event | str]  # a str: the reason the stream is being closed
    closed: str | None = None

    def close(self, reason: str) -> None:
        """Empty the queue and leave only the reason: what was queued is superseded by
        the snapshot the client takes when it connects again."""
        if self.closed is not None:
            return
        self.closed = reason
        DROPPED.labels(reason).inc()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(reason)


@dataclass(eq=False)
class Feed:
    settings: Settings
    subscribers: set[Subscriber] = field(default_factory=set)
    up: bool = False

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(asyncio.Queue(self.settings.api_live_queue_max + 1))
        self.subscribers.add(subscriber)
        STREAMS.set(len(self.subscribers))
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        STREAMS.set(len(self.subscribers))

    def close_all(self, reason: str) -> None:
        for subscriber in list(self.subscribers):
            subscriber.close(reason)

    def publish(self, event: Event) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.closed is not None:
                continue
            # One slot is kept for the closing reason.
            if subscriber.queue.qsize() >= self.settings.api_live_queue_max:
                subscriber.close("slow_client")
                self.unsubscribe(subscriber)
            else:
                subscriber.queue.put_nowait(event)

    async def run(self) -> None:
        """Read both topics from their end until cancelled (supervised: app.py)."""
        topics = {
            self.settings.topic(contract.ALERTS): "alert",
            self.settings.topic(contract.NEWS2_SCORES): "news2",
        }
        consumer = kafka.consumer(self.settings, None)
        await consumer.start()
        try:
            assigned = []
            for topic in topics:
                found = await kafka.partitions(consumer, topic)
                if not found:
                    raise LookupError(f"topic {topic} has no partitions (not created yet?)")
                assigned += found
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve the end now: what is published from here is seen
                await consumer.position(tp)
            self.up = True
            FEED_UP.set(1)
            log.info("live feed reading", extra={"partitions": len(assigned)})
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                for tp, records in batches.items():
                    for record in records:
                        event = decode(topics[tp.topic], record.value)
                        if event is not None:
                            self.publish(event)
        finally:
            self.up = False
            FEED_UP.set(0)
            await consumer.stop()


def decode(kind: str, raw: bytes | None) -> Event | None:
    """The board's event of a message; None (counted) for one the board cannot use: not
    a JSON object, an unknown alert schema, a retrospective alert (never paged)."""
    try:
        if kind == "news2":
            score = contract.decode_news2_score(raw)
            EVENTS.labels("news2").inc()
            return Event("news2", score.patient_id, {
                "patient_id": score.patient_id, "t": contract.iso(score.t),
                "score": score.news2, "band": score.band, "partial": score.partial,
            })  # fmt: skip
        doc = orjson.loads(raw or b"")
        if (
            not isinstance(doc, dict)
            or doc.get("schema") not in (contract.ALERT_SCHEMA, contract.ALERT_SCHEMA_V2)
            or not isinstance(doc.get("patient_id"), str)
        ):
            raise ValueError("not a public alert")
    except (ValueError, ContractError):
        EVENTS.labels("unusable").inc()
        return None
    if doc.get("retrospective"):
        EVENTS.labels("retrospective").inc()
        return None
    EVENTS.labels("alert").inc()
    return Event("alert", doc["patient_id"], doc)

"""Escalations and the publication of the human states, run inside `vitals sink alerts`.

Why the alerts sink: it already owns the database rows of alerts, a producer on
vitals.alerts and the publish-then-mark discipline with its recovery; the read API is
read-mostly and has no producer, and the processor knows nothing of people.

One sink instance at a time does this work: it holds a lease, a PostgreSQL session
advisory lock on a connection of its own. The lease dies with the process (or its
connection), and another instance takes it within `escalation_check_interval_s`. Every
tick, the holder records the escalations due (lifecycle.escalate: idempotent) and
publishes every human state not yet published, then marks it. A holder that died between
the broker's acknowledgement and the marking leaves rows unmarked whose documents are
on the topic: a new holder first reads the topic from the oldest unmarked row and marks
what it finds there (recovery.on_topic), so nothing is lost and nothing published twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from sinks.alerts import lifecycle
from sinks.alerts.recovery import on_topic
from sinks.database import TRANSIENT
from vitals import contract, kafka, rules_file
from vitals.db import locks
from vitals.db.pgtime import from_ms
from vitals.lifecycle import wait_or_stop
from vitals.settings import Settings

log = logging.getLogger(__name__)

ESCALATIONS = Counter("vitals_alert_escalations_total", "Escalations recorded, by level", ["level"])
LIFECYCLE_PUBLISHED = Counter(
    "vitals_alert_lifecycle_published_total",
    "Human states of alerts acknowledged on vitals.alerts, by state",
    ["state"],
)


class Escalator:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Per severity and cohort: the setting, overridden by the rules file's parts.
        self._escalation = rules_file.escalation(
            rules_file.load(settings.rules_file), settings.escalation_delays()
        )
        self._every_s = settings.escalation_check_interval_s
        self._topic = settings.topic(contract.ALERTS)
        # Acknowledged by the broker, not yet marked (a failed marking is retried without
        # sending again): key -> published_at, ms.
        self._acked: dict[lifecycle.Key, int] = {}
        self.leading = False

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: take the lease when free, and while holding it, tick."""
        while not stop.is_set():
            try:
                await self._lead(stop)
            except TRANSIENT as exc:
                log.warning("escalation paused; retrying", extra={"error": type(exc).__name__})
            self.leading = False
            await wait_or_stop(stop, self._every_s)

    async def _lead(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self._settings.database_url, timeout=5)
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", locks.ESCALATION_LEASE):
                return  # another instance leads
            self.leading = True
            self._acked.clear()  # a new lease starts from what the topic says
            producer = await kafka.start_producer(self._settings)
            try:
                await self._reconcile(conn)
                while not stop.is_set():
                    await self.tick(conn, producer)
                    await wait_or_stop(stop, self._every_s)
            finally:
                await kafka.stop_producer(producer, self._settings.shutdown_grace_s)
        finally:
            await conn.close()  # releases the lease

    async def tick(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> None:
        for _, _, level in await lifecycle.escalate(conn, self._escalation, datetime.now(UTC)):
            ESCALATIONS.labels(str(level)).inc()
        pending = await lifecycle.unpublished(conn)
        await self._publish(producer, [p for p in pending if p[0] not in self._acked])
        groups: dict[int, list[lifecycle.Key]] = {}
        for key, *_ in pending:
            if key in self._acked:
                groups.setdefault(self._acked[key], []).append(key)
        for published, keys in groups.items():
            await lifecycle.mark_published(conn, keys, from_ms(published))
            for key in keys:
                del self._acked[key]

    async def _publish(self, producer: AIOKafkaProducer, pending: list[lifecycle.Pending]) -> None:
        if not pending:
            return
        published = contract.now_ms()
        sends = [
            await producer.send(
                self._topic,
                orjson.dumps(contract.lifecycle_document(opened, change, published)),
                key=opened.patient_id.encode(),
            )
            for _, opened, change in pending
        ]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for (key, _, change), outcome in zip(pending, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                self._acked[key] = published
                LIFECYCLE_PUBLISHED.labels(change.state).inc()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _reconcile(self, conn: asyncpg.Connection) -> None:
        oldest = await lifecycle.oldest_unpublished(conn)
        if oldest is None:
            return
        rows = await conn.fetch(
            "SELECT alert_id, state, level FROM alert_lifecycle WHERE published_at IS NULL"
        )
        unmarked = {(r["alert_id"], r["state"], r["level"]) for r in rows}
        since_ms = int(oldest.timestamp() * 1000) - 1000  # publication follows the change
        found = await on_topic(self._settings, unmarked, since_ms, lifecycle.key_of_document)
        marked = 0
        for published_at, keys in found.items():
            marked += await lifecycle.mark_published(conn, keys, published_at)
        log.info(
            "unmarked human states reconciled",
            extra={"stage": "sink-alerts", "unmarked": len(unmarked), "already_published": marked},
        )

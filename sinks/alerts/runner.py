"""`vitals sink alerts`: vitals.detections -> the alerts table and the public vitals.alerts.

For each batch: store the detections (ON CONFLICT (alert_id, state, episode_start) DO
NOTHING; the alert id determines the episode start); select those of the batch not yet
published, leaving out suppressed repeats (stored, never published); produce each as the
public alert document, keyed by patient, and await every acknowledgement; mark them
published; return (offsets commit). A redelivered or duplicated detection finds its row
published and is not sent again. Between the acknowledgements and the marking, a state is
on the topic but not marked: if the marking fails, the sink remembers what was
acknowledged and only marks it on the retry; if the sink dies there, the next one finds
those alerts on the topic before it consumes (recovery.py). Either way a state is
published once; subscribers may still dedupe on (alert_id, state), docs/alert-schema.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram

from sinks.alerts.escalation import Escalator
from sinks.alerts.recovery import reconcile
from sinks.alerts.store import (
    AlertRow,
    Key,
    key_of,
    keys_of,
    mark_published,
    row_of,
    store,
    unpublished,
)
from sinks.database import Database
from sinks.loop import SinkLoop
from sinks.outage import Outage
from vitals import contract
from vitals.consumer import Commit
from vitals.db.pgtime import from_ms
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings
from vitals.supervise import supervise

STAGE = "sink-alerts"
BATCH = 500  # detections are rare next to readings; a fixed batch is plenty

STORED = Counter(
    "vitals_alerts_stored_total", "Detections stored, new or already stored", ["result"]
)
SUPPRESSED = Counter(
    "vitals_alerts_suppressed_total",
    "Suppressed repeats received: stored, never published (redeliveries count again)",
    ["rule", "state"],
)
PUBLISHED = Counter(
    "vitals_alerts_published_total",
    "Alerts acknowledged on vitals.alerts",
    ["rule", "severity", "state", "retrospective"],
)
# End-to-end latency, ending when vitals.alerts acknowledged the alert. since="event": from
# the reading that changed the episode's state (its event time; for device silence, last
# arrival + the silence delay), the clinically meaningful figure; retrospective alerts are
# left out, being late by definition (they are counted in PUBLISHED). since="detected":
# from the processor's decision, i.e. the detections topic and this sink alone.
LATENCY = Histogram(
    "vitals_alert_latency_seconds",
    "Seconds from a reading's event time (or the processor's decision) to alert publication",
    ["since"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


def decode(record: ConsumerRecord) -> AlertRow:
    return row_of(contract.decode_detection(record.value))


class AlertsSink:
    """The handler: store, publish the unpublished, mark them, in that order."""

    def __init__(self, loop: SinkLoop, db: Database, stop: asyncio.Event) -> None:
        self._loop, self._db, self._stop = loop, db, stop
        self._topic = loop.settings.topic(contract.ALERTS)
        # Acknowledged on vitals.alerts, not yet marked in the table: key -> published_at.
        # (A key whose partition a rebalance took away stays here: a few bytes, harmless.)
        self._acked: dict[Key, int] = {}
        # Before its first publication the sink looks for alerts a predecessor published
        # but could not mark (recovery.py); in the handler, so outages are retried as usual.
        self._reconciled = False

    async def handle(self, records: Sequence[ConsumerRecord]) -> Commit:
        return await self._loop.write_durably(records, decode, self.write, self._stop)

    async def write(self, rows: list[AlertRow]) -> None:
        async with self._db.connection() as conn:
            if not self._reconciled:
                await reconcile(self._loop.settings, conn)
                self._reconciled = True
            new = await store(conn, rows)
            STORED.labels("new").inc(new)
            STORED.labels("duplicate").inc(len(rows) - new)
            for _id, state, _patient, rule, *_, suppressed in rows:
                if suppressed:  # recorded, and left out of `unpublished`
                    SUPPRESSED.labels(rule, state).inc()
            pending = await unpublished(conn, keys_of(rows))
            if not pending:
                return
            unsent = [d for d in pending if key_of(d) not in self._acked]
            await _publish(self._loop.producer, self._topic, unsent, self._acked)
            keys = [key_of(d) for d in pending]
            for published, marked in _by_time(keys, self._acked).items():
                await mark_published(conn, marked, from_ms(published))
            for key in keys:
                del self._acked[key]


def _by_time(keys: list[Key], acked: dict[Key, int]) -> dict[int, list[Key]]:
    """Keys grouped by their published_at (one time per publishing attempt)."""
    groups: dict[int, list[Key]] = {}
    for key in keys:
        groups.setdefault(acked[key], []).append(key)
    return groups


def observe_published(detection: contract.Detection, published: int) -> None:
    """Count one acknowledged alert and how long it took to get there."""
    retrospective = str(detection.retrospective).lower()
    PUBLISHED.labels(detection.rule, detection.severity, detection.state, retrospective).inc()
    # Device clocks may run ahead of ours (up to VITALS_MAX_FUTURE_SKEW_S): clamp at 0.
    if not detection.retrospective:
        LATENCY.labels("event").observe(max(0, published - detection.at) / 1000)
    LATENCY.labels("detected").observe(max(0, published - detection.detected) / 1000)


async def _publish(
    producer: AIOKafkaProducer,
    topic: str,
    pending: list[contract.Detection],
    acked: dict[Key, int],
) -> None:
    """Send all, then await every acknowledgement, recording each in `acked`; raise the
    first failure (the acknowledged ones are not sent again on the retry)."""
    if not pending:
        return
    published = contract.now_ms()
    sends = [
        await producer.send(
            topic,
            orjson.dumps(contract.alert_document(detection, published)),
            key=detection.patient_id.encode(),
        )
        for detection in pending
    ]
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    for detection, outcome in zip(pending, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            acked[key_of(detection)] = published
            observe_published(detection, published)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def run_sink(settings: Settings, stop: asyncio.Event, *, escalate: bool = True) -> None:
    """Consume until `stop` is set; the current batch finishes (or stays uncommitted).
    `escalate=False` leaves the human states to other sinks (tests whose database holds
    other tests' alerts, which this sink would otherwise publish on its topic)."""
    outage = Outage(STAGE)
    # Built first: a rules file whose escalation part is bad stops the start (ConfigError).
    escalator = Escalator(settings) if escalate else None
    async with Database(settings, outage, migrate_first=settings.migrate_on_start) as db:
        loop = SinkLoop(
            settings,
            outage=outage,
            stage=STAGE,
            group_id=settings.alerts_group,
            topics=[contract.DETECTIONS],
            max_records=lambda: BATCH,
            tick=db.check,
        )
        sink = AlertsSink(loop, db, stop)
        await db.check()
        # The human states (acknowledged, escalated, outcome): escalation.py says why here.
        if escalator is None:
            await loop.run(sink.handle, stop)
            return
        escalating = supervise("escalation", lambda: escalator.run(stop))
        try:
            await loop.run(sink.handle, stop)
        finally:
            stop.set()
            try:
                await asyncio.wait_for(escalating, settings.shutdown_grace_s)
            except TimeoutError:
                escalating.cancel()


async def run(settings: Settings) -> None:
    await run_sink(settings, stop_on_signals())

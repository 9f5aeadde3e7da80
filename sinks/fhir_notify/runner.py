"""`vitals sink fhir-notify`: every alert state change on vitals.alerts, POSTed as a FHIR
notification (vitals/fhir_alerts.py) to each subscription that may see it, at least once.

Two halves, joined by a table (fhir_notifications, queue.py):

- the consumer queues one row per matching subscription for each change, then its batch's
  offsets commit: an offset is committed once the notifications it owes are durable;
- the deliverer POSTs the due rows, each on its own (up to VITALS_FHIR_NOTIFY_CONCURRENCY
  at once), and records a 2xx as delivered, a failure as a retry after a doubling delay,
  and a notification failing for longer than VITALS_FHIR_NOTIFY_DEAD_AFTER_S as a dead
  letter.

Why a table rather than holding offsets until every endpoint answered: alerts of many
patients share a partition, so one endpoint down for an hour would hold every other
subscriber's alerts behind it; the table lets each notification wait alone. A notifier
killed mid-delivery loses nothing: the consumer's uncommitted records are queued again
(the table's key makes that harmless) and a claimed row is retried when its lease ends.
The price is duplicates: a notification POSTed but not recorded is sent again, with the
same event number and Bundle id (docs/fhir.md says so to subscribers).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
import httpx
import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter

from sinks.database import TRANSIENT, Database
from sinks.fhir_notify import queue
from sinks.loop import SinkLoop
from sinks.outage import Outage
from vitals import contract, fhir, fhir_alerts
from vitals.consumer import Commit
from vitals.db import alert_issues
from vitals.errors import ContractError
from vitals.lifecycle import stop_on_signals, wait_or_stop
from vitals.settings import Settings
from vitals.supervise import supervise

log = logging.getLogger(__name__)

STAGE = "sink-fhir-notify"
BATCH = 500
LEASE_MARGIN_S = 5.0  # beyond the HTTP timeout, for recording the outcome

QUEUED = Counter("vitals_fhir_notifications_queued_total", "Notifications queued for subscribers")
ATTEMPTS = Counter(
    "vitals_fhir_notification_attempts_total",
    "Notification attempts by outcome: delivered (2xx), retry, dead (dead-lettered), "
    "withdrawn (the subscription is off or the patient left its key's scope)",
    ["outcome"],
)

Change = tuple[uuid.UUID, str, int, str, datetime]  # alert_id, state, level, patient, when


def decode(record: ConsumerRecord) -> Change:
    """The alert state change a vitals.alerts document (v1 or v2) announces."""
    try:
        doc = orjson.loads(record.value or b"")
        if doc["schema"] not in (contract.ALERT_SCHEMA, contract.ALERT_SCHEMA_V2):
            raise ValueError(f"unknown schema {str(doc['schema'])[:40]!r}")
        state, level = doc["state"], int(doc.get("escalation_level", 0))
        if state not in (*contract.STATES, *contract.LIFECYCLE_STATES):
            raise ValueError("unknown state")
        patient = doc["patient_id"]
        if not isinstance(patient, str) or not patient:
            raise ValueError("no patient_id")
        return (
            uuid.UUID(doc["alert_id"]),
            state,
            level,
            patient,
            datetime.fromisoformat(doc["published_at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ContractError(f"not an alert document: {exc!r}") from exc


class Queuer:
    """The consumer's handler: queue every change of the batch, then commit."""

    def __init__(self, loop: SinkLoop, db: Database, stop: asyncio.Event) -> None:
        self._loop, self._db, self._stop = loop, db, stop

    async def handle(self, records: Sequence[ConsumerRecord]) -> Commit:
        return await self._loop.write_durably(records, decode, self.write, self._stop)

    async def write(self, changes: list[Change]) -> None:
        async with self._db.connection() as conn, conn.transaction():
            for change in changes:
                QUEUED.inc(await queue.queue(conn, *change))


class Deliverer:
    """POSTs the due notifications, each on its own task, and records their outcomes."""

    def __init__(self, settings: Settings, outage: Outage) -> None:
        self._settings = settings
        self._outage = outage
        self._base = settings.fhir_base()
        self._timeout_s = settings.fhir_notify_timeout_s
        self._lease = timedelta(seconds=self._timeout_s + LEASE_MARGIN_S)
        self._dead_after = timedelta(seconds=settings.fhir_notify_dead_after_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`; then the attempts under way finish (or their leases end)."""
        pool = await asyncpg.create_pool(
            self._settings.database_url, min_size=0, max_size=4, timeout=5, command_timeout=30
        )
        inflight: set[asyncio.Task[None]] = set()
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                while not stop.is_set():
                    free = self._settings.fhir_notify_concurrency - len(inflight)
                    claimed = await self._claim(pool, free) if free > 0 else []
                    for due, issue in claimed:
                        task = asyncio.create_task(self._attempt(pool, client, due, issue))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    if len(claimed) < free:  # nothing more due now
                        await _first_of(inflight, stop, self._settings.fhir_notify_poll_s)
                if inflight:
                    await asyncio.wait(inflight, timeout=self._settings.shutdown_grace_s)
        finally:
            for task in inflight:
                task.cancel()
            await pool.close()

    async def _claim(
        self, pool: asyncpg.Pool, rows: int
    ) -> list[tuple[queue.Due, dict[str, object] | None]]:
        try:
            async with pool.acquire() as conn:
                claimed = await queue.claim(conn, rows, self._lease)
                ids = {d.alert_id for d in claimed}
                found = await alert_issues.alerts(conn, ids=list(ids), rows=len(ids) or 1)
        except TRANSIENT as exc:
            self._outage.failed(exc)
            return []
        issues = {a.opened.alert_id: fhir_alerts.detected_issue(a) for a in found}
        return [(d, issues.get(str(d.alert_id))) for d in claimed]

    async def _attempt(
        self,
        pool: asyncpg.Pool,
        client: httpx.AsyncClient,
        due: queue.Due,
        issue: dict[str, object] | None,
    ) -> None:
        """One POST and its record. A failure to record leaves the lease to end: the
        notification is attempted again (at least once)."""
        try:
            if not due.allowed or issue is None:
                async with pool.acquire() as conn:
                    await queue.withdrawn(conn, due)
                ATTEMPTS.labels("withdrawn").inc()
                return
            error = await self._post(client, due, issue)
            async with pool.acquire() as conn:
                if error is None:
                    await queue.delivered(conn, due)
                    outcome = "delivered"
                else:
                    dead = await queue.failed(
                        conn, due, error, self._retry_in(due), self._dead_after
                    )
                    outcome = "dead" if dead else "retry"
            ATTEMPTS.labels(outcome).inc()
            log.info(
                "notification attempt",
                extra={
                    "stage": STAGE, "subscription": str(due.subscription_id),
                    "event_number": due.event_number, "attempt": due.attempts,
                    "outcome": outcome, "error": error,
                },
            )  # fmt: skip
        except TRANSIENT as exc:
            self._outage.failed(exc)
            log.warning(
                "notification outcome not recorded; retried when its lease ends",
                extra={"stage": STAGE, "error": type(exc).__name__},
            )
        except Exception:  # a bug: said loudly; the lease brings the notification back
            log.exception("notification attempt failed", extra={"stage": STAGE})

    async def _post(
        self, client: httpx.AsyncClient, due: queue.Due, issue: dict[str, object]
    ) -> str | None:
        """None for a 2xx, else what went wrong (no patient data in it: it is logged)."""
        subscription = fhir_alerts.Subscription(
            subscription_id=due.subscription_id, endpoint=due.endpoint, content=due.content,
            headers=due.headers, patient_id=due.filter, reason=due.reason, status="active",
        )  # fmt: skip
        bundle = fhir_alerts.notification(
            subscription=subscription,
            base=self._base,
            event_number=due.event_number,
            events_since_start=due.events,
            timestamp_ms=int(due.event_at.timestamp() * 1000),
            issue=issue,
        )
        headers = {"Content-Type": fhir.MEDIA_TYPE}
        for line in due.headers:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        try:
            answer = await client.post(due.endpoint, content=orjson.dumps(bundle), headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}"

    def _retry_in(self, due: queue.Due) -> timedelta:
        """Doubling from the base up to the maximum, less up to a quarter at random (so
        notifications failed together do not all return together)."""
        s = self._settings
        delay = min(s.fhir_notify_retry_max_s, s.fhir_notify_retry_base_s * 2 ** (due.attempts - 1))
        return timedelta(seconds=delay * random.uniform(0.75, 1.0))


async def _first_of(tasks: set[asyncio.Task[None]], stop: asyncio.Event, seconds: float) -> None:
    """Wait until an attempt finishes (a slot is free), `stop`, or `seconds`."""
    if not tasks:
        await wait_or_stop(stop, seconds)
        return
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({*tasks, stopping}, timeout=seconds, return_when="FIRST_COMPLETED")
    finally:
        stopping.cancel()


async def run_sink(settings: Settings, stop: asyncio.Event) -> None:
    outage = Outage(STAGE)
    async with Database(settings, outage, migrate_first=settings.migrate_on_start) as db:
        loop = SinkLoop(
            settings,
            outage=outage,
            stage=STAGE,
            group_id=settings.fhir_notify_group,
            topics=[contract.ALERTS],
            max_records=lambda: BATCH,
            tick=db.check,
        )
        queuer = Queuer(loop, db, stop)
        await db.check()
        deliverer = Deliverer(settings, outage)
        delivering = supervise("fhir-delivery", lambda: deliverer.run(stop))
        try:
            await loop.run(queuer.handle, stop)
        finally:
            stop.set()
            try:
                await asyncio.wait_for(delivering, settings.shutdown_grace_s + 5)
            except TimeoutError:
                delivering.cancel()


async def run(settings: Settings) -> None:
    await run_sink(settings, stop_on_signals())

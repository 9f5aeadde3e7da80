"""The audit trail of uploads: one record per upload, written to `audit_log` in batches.

Off the request path: `record` appends to a bounded queue and returns; a background task
COPYs what has queued every `audit_flush_s` (or sooner when a batch is full). While the
database is down the queue keeps growing up to `audit_queue_max`; past that, records are
dropped and counted (vitals_gateway_audit_records_total{fate="dropped"}), because refusing
uploads for want of an audit row would stop clinical data over a bookkeeping outage.
A record carries the gateway, time, counts and outcome: never a reading, a patient or a
device. Admin actions are audited synchronously instead (ingest/registry_store.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime

import asyncpg

from ingest import metrics

log = logging.getLogger(__name__)

COLUMNS = (
    "at",
    "actor_kind",
    "actor",
    "action",
    "outcome",
    "status",
    "upload_id",
    "accepted",
    "rejected",
)
Record = tuple[datetime, str, str, str, str, int, str | None, int | None, int | None]


class AuditTrail:
    def __init__(
        self, pool: asyncpg.Pool | None, *, queue_max: int, batch_max: int, flush_s: float
    ) -> None:
        """With no pool the trail keeps nothing: the per-upload log line is the record."""
        self._pool = pool
        self._queue: deque[Record] = deque()
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._flush_s = flush_s
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def upload(
        self,
        gateway_id: str,
        *,
        outcome: str,
        status: int,
        upload_id: str | None,
        accepted: int | None = None,
        rejected: int | None = None,
    ) -> None:
        if self._pool is None:
            return
        if len(self._queue) >= self._queue_max:
            metrics.AUDIT_RECORDS.labels("dropped").inc()
            return
        at = datetime.now(UTC)
        self._queue.append(
            (at, "gateway", gateway_id, "upload", outcome, status, upload_id, accepted, rejected)
        )
        metrics.AUDIT_PENDING.set(len(self._queue))
        if len(self._queue) >= self._batch_max:
            self._wake.set()

    async def run(self) -> None:
        """Flush forever; cancel to stop (then call `flush` once more)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write what is queued, a batch at a time; keep it queued if the database fails."""
        written = 0
        while self._queue and self._pool is not None:
            batch = [self._queue[i] for i in range(min(self._batch_max, len(self._queue)))]
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    await conn.copy_records_to_table(
                        "audit_log", records=batch, columns=COLUMNS, timeout=10
                    )
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "audit write failed; kept for the next flush",
                    extra={"error": type(exc).__name__, "pending": len(self._queue)},
                )
                break
            for _ in batch:
                self._queue.popleft()
            written += len(batch)
            metrics.AUDIT_RECORDS.labels("written").inc(len(batch))
        metrics.AUDIT_PENDING.set(len(self._queue))
        return written

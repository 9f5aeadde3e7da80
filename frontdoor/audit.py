"""The audit trail of uploads: one record per upload, written to `audit_log` in batches.

Off the request path: `record` appends to a bounded queue and returns; a background task
COPYs what has queued every `audit_flush_s` (or sooner when a batch is full). While the
database is down the queue keeps growing up to `audit_queue_max`; past that, records are
dropped and counted (vitals_gateway_audit_records_total{fate="dropped"}), because refusing
uploads for want of an audit row would stop clinical data over a bookkeeping outage.
A record carries the gateway, time, counts and outcome: never a reading, a patient or a
device. Admin actions are audited synchronously instead (frontdoor/registry_store.py).

The read API's audit of reads (readapi/audit.py) is this trail with another table and
its rows sealed into a hash chain as they are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from frontdoor import metrics

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


class AuditTrail:
    table = "audit_log"
    columns: Sequence[str] = COLUMNS

    def __init__(
        self,
        pool: asyncpg.Pool | None,
        *,
        queue_max: int,
        batch_max: int,
        flush_s: float,
        records: Counter = metrics.AUDIT_RECORDS,
        pending: Gauge = metrics.AUDIT_PENDING,
    ) -> None:
        """With no pool the trail keeps nothing: the per-upload log line is the record."""
        self._pool = pool
        self._queue: deque[tuple[Any, ...]] = deque()
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._flush_s = flush_s
        self._wake = asyncio.Event()
        self._records = records
        self._pending = pending

    def __len__(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self._queue_max

    def append(self, record: tuple[Any, ...]) -> None:
        """Queue one record; dropped and counted when the queue is full."""
        if self._pool is None:
            return
        if self.full():
            self._records.labels("dropped").inc()
            return
        self._queue.append(record)
        self._pending.set(len(self._queue))
        if len(self._queue) >= self._batch_max:
            self._wake.set()

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
        at = datetime.now(UTC)
        self.append(
            (at, "gateway", gateway_id, "upload", outcome, status, upload_id, accepted, rejected)
        )

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
            sealed = self._sealed(batch)
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    await self._copy(conn, sealed)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "audit write failed; kept for the next flush",
                    extra={"error": type(exc).__name__, "pending": len(self._queue)},
                )
                break
            self._written(sealed)
            for _ in batch:
                self._queue.popleft()
            written += len(batch)
            self._records.labels("written").inc(len(batch))
        self._pending.set(len(self._queue))
        return written

    # Hooks for trails whose rows are finished as they are written (the read audit's chain).
    def _sealed(self, batch: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows to write for `batch`; called again for the same batch after a failure."""
        return batch

    def _written(self, sealed: list[tuple[Any, ...]]) -> None:
        """`sealed` is in the database."""

    async def _copy(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
        await conn.copy_records_to_table(self.table, records=rows, columns=self.columns, timeout=10)

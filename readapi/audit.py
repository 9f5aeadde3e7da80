"""The read audit: every read of a patient's data, on record in `read_audit` (0011).

The upload audit's trail (frontdoor/audit.py: a bounded queue, batches written every
`audit_flush_s`) with two differences. Each batch is sealed into this process's hash chain
(chain.py) as it is written, not as it is queued, so a record dropped from a full queue
never leaves a hole in the chain. And a full queue refuses reads (503, routes.py) rather
than dropping their records: a read is never served off the record, whereas an upload is
taken (refusing clinical data over a bookkeeping outage would be worse).

The API's sessions are read-only; the audit's transaction alone is made read-write, and
the API's role may only insert into this table.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from frontdoor import chain
from frontdoor.audit import AuditTrail
from frontdoor.registry import Credential

RECORDS = Counter(
    "vitals_api_read_audit_records_total",
    "Read audit records by fate (written; dropped never happens: a full queue refuses reads)",
    ["fate"],
)
PENDING = Gauge("vitals_api_read_audit_pending", "Read audit records waiting to be written")


class ReadAudit(AuditTrail):
    table = "read_audit"
    columns = (*chain.FIELDS, "prev_hash", "hash")

    def __init__(
        self, pool: asyncpg.Pool | None, *, queue_max: int, batch_max: int, flush_s: float
    ) -> None:
        super().__init__(
            pool,
            queue_max=queue_max,
            batch_max=batch_max,
            flush_s=flush_s,
            records=RECORDS,
            pending=PENDING,
        )
        # A chain of its own per process run: no need to read the table to extend it.
        self.writer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._seq = 0
        self._head = chain.GENESIS

    def read(
        self, reader: Credential, route: str, patient_id: str, *, outcome: str, status: int,
        rows: int,
    ) -> None:  # fmt: skip
        at = datetime.now(UTC)
        self.append((at, reader.key_id, reader.principal, route, patient_id, outcome, status, rows))

    def _sealed(self, batch: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        sealed = []
        seq, head = self._seq, self._head
        for record in batch:
            seq += 1
            values = (self.writer, seq, *record)
            digest = chain.link(head, values)
            sealed.append((*values, head, digest))
            head = digest
        return sealed

    def _written(self, sealed: list[tuple[Any, ...]]) -> None:
        self._seq, self._head = sealed[-1][1], sealed[-1][-1]

    async def _copy(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
        async with conn.transaction():
            # The pool's sessions default to read-only; this one transaction appends.
            await conn.execute("SET TRANSACTION READ WRITE")
            await super()._copy(conn, rows)

"""`vitals sink timescale`: vitals.readings -> the readings table.

Each polled batch is flattened to rows and written in ONE transaction; the handler returns
only after that commit, then ConsumerLoop commits the offsets (at-least-once delivery,
exactly-once effect through the table's primary key). Failures and dead letters are
handled by sinks.loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram

from sinks.database import Database
from sinks.loop import SinkLoop
from sinks.outage import Outage
from sinks.timescale.batching import BatchSizer
from sinks.timescale.rows import Row, rows_of
from sinks.timescale.writer import copy_then_upsert
from vitals import contract
from vitals.consumer import Commit
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings

log = logging.getLogger(__name__)

STAGE = "sink-timescale"

ROWS = Counter(
    "vitals_sink_rows_total", "Readings written, new or already stored (duplicate)", ["result"]
)
WRITE_SECONDS = Histogram(
    "vitals_sink_write_seconds", "Time of one COPY-then-upsert transaction, commit included"
)
WRITE_ROWS = Histogram(
    "vitals_sink_write_rows",
    "Rows per COPY-then-upsert transaction",
    buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000),
)


def decode(record: ConsumerRecord) -> list[Row]:
    return rows_of(contract.decode_upload(record.value))


class ReadingsSink:
    """The handler: rows of a whole batch in one transaction, then the batch size adapts."""

    def __init__(self, loop: SinkLoop, db: Database, sizer: BatchSizer, stop: asyncio.Event):
        self._loop, self._db, self._sizer, self._stop = loop, db, sizer, stop

    async def handle(self, records: Sequence[ConsumerRecord]) -> Commit:
        started = time.perf_counter()
        commit = await self._loop.write_durably(records, decode, self.write, self._stop)
        if commit is None:
            self._sizer.observe(len(records), time.perf_counter() - started)
        return commit

    async def write(self, uploads: list[list[Row]]) -> None:
        rows = [row for upload in uploads for row in upload]
        started = time.perf_counter()
        async with self._db.connection() as conn:
            new = await copy_then_upsert(conn, rows)
        WRITE_SECONDS.observe(time.perf_counter() - started)
        WRITE_ROWS.observe(len(rows))
        ROWS.labels("new").inc(new)
        ROWS.labels("duplicate").inc(len(rows) - new)


async def run_sink(settings: Settings, stop: asyncio.Event) -> None:
    """Consume until `stop` is set; the current batch finishes (or stays uncommitted)."""
    outage = Outage(STAGE)
    sizer = BatchSizer(
        settings.sink_batch_min,
        settings.sink_batch_max,
        settings.sink_batch_target_s,
        stage=STAGE,
    )
    async with Database(settings, outage, migrate_first=settings.migrate_on_start) as db:
        loop = SinkLoop(
            settings,
            outage=outage,
            stage=STAGE,
            group_id=settings.sink_group,
            topics=[contract.READINGS],
            max_records=sizer,
            tick=db.check,
        )
        sink = ReadingsSink(loop, db, sizer, stop)
        # Migrate and learn the database's state before the probes answer.
        await db.check()
        await loop.run(sink.handle, stop)


async def run(settings: Settings) -> None:
    await run_sink(settings, stop_on_signals())

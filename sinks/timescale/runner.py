"""`vitals sink timescale`: vitals.readings -> the readings table, and vitals.news2 -> the
news2_scores table.

Each polled batch's readings are flattened to rows and written in ONE transaction, its
NEWS2 score records (few) in a second one; the handler returns only after both commits,
then ConsumerLoop commits the offsets (at-least-once delivery, exactly-once effect through
the tables' primary keys). Failures and dead letters are handled by sinks.loop.
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
from sinks.timescale.scores import ScoreRow, score_row, upsert_scores
from sinks.timescale.writer import ReadingsWriter
from vitals import contract
from vitals.consumer import Commit
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings

log = logging.getLogger(__name__)

STAGE = "sink-timescale"

ROWS = Counter(
    "vitals_sink_rows_total",
    "Readings written: new, or already stored (duplicate; a conflict recorded before included)",
    ["result"],
)
CONFLICTS = Counter(
    "vitals_sink_reading_conflicts_total",
    "Readings whose value contradicted the stored one, recorded in reading_conflicts",
    ["metric"],
)
WRITE_SECONDS = Histogram(
    "vitals_sink_write_seconds", "Time of one write of a batch of readings, commit(s) included"
)
WRITE_ROWS = Histogram(
    "vitals_sink_write_rows",
    "Rows per write of a batch of readings",
    buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000),
)
SCORES = Counter(
    "vitals_sink_news2_scores_total", "NEWS2 score records written (new, replaced or redelivered)"
)

# An upload's rows (vitals.readings), or one score (vitals.news2).
Decoded = list[Row] | ScoreRow


def decode(record: ConsumerRecord) -> Decoded:
    if record.topic.endswith(contract.NEWS2_SCORES):  # after Settings.topic_prefix
        return score_row(contract.decode_news2_score(record.value))
    return rows_of(contract.decode_upload(record.value))


class ReadingsSink:
    """The handler: rows of a whole batch in one transaction, then the batch size adapts."""

    def __init__(self, loop: SinkLoop, db: Database, sizer: BatchSizer, stop: asyncio.Event):
        self._loop, self._db, self._sizer, self._stop = loop, db, sizer, stop
        self._writer = ReadingsWriter()

    async def handle(self, records: Sequence[ConsumerRecord]) -> Commit:
        started = time.perf_counter()
        commit = await self._loop.write_durably(records, decode, self.write, self._stop)
        if commit is None:
            self._sizer.observe(len(records), time.perf_counter() - started)
        return commit

    async def write(self, items: list[Decoded]) -> None:
        rows = [row for item in items if isinstance(item, list) for row in item]
        scores = [item for item in items if isinstance(item, tuple)]
        if rows:
            await self.write_readings(rows)
        if scores:
            async with self._db.connection() as conn:
                SCORES.inc(await upsert_scores(conn, scores))

    async def write_readings(self, rows: list[Row]) -> None:
        started = time.perf_counter()
        async with self._db.connection() as conn:
            new, conflicts = await self._writer.write(conn, rows)
        WRITE_SECONDS.observe(time.perf_counter() - started)
        WRITE_ROWS.observe(len(rows))
        ROWS.labels("new").inc(new)
        ROWS.labels("duplicate").inc(len(rows) - new - len(conflicts))
        for metric in conflicts:
            CONFLICTS.labels(metric).inc()


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
            topics=[contract.READINGS, contract.NEWS2_SCORES],
            max_records=sizer,
            tick=db.check,
        )
        sink = ReadingsSink(loop, db, sizer, stop)
        # Migrate and learn the database's state before the probes answer.
        await db.check()
        await loop.run(sink.handle, stop)


async def run(settings: Settings) -> None:
    await run_sink(settings, stop_on_signals())

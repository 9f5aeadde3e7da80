"""The sinks' consume loop: decode, write durably, park the bad, retry on outages.

One batch at a time:

1. decode every record; a ContractError marks the record for the dead-letter topic;
2. write the decoded items (one database transaction for the timescale sink);
3. if the database rejects the data itself (a data or constraint error), split the batch
   in halves until the offending records are found; they join the dead letters, the rest
   is written;
4. park the dead letters, then return: ConsumerLoop commits the offsets.

If a dependency fails instead (database down, broker unreachable), the batch is rewound:
the consumer seeks back to its first offsets, nothing is committed, the sink reports
not-ready and waits (growing backoff) before polling the same records again. Polling
keeps going between attempts, so the consumer stays in its group through long outages.
Dead letters are produced only after the writes succeeded, so a retried batch does not
park its bad records once per attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from aiokafka.structs import ConsumerRecord, TopicPartition

from sinks.database import TRANSIENT
from sinks.outage import Outage
from vitals.consumer import Commit, ConsumerLoop
from vitals.errors import ContractError
from vitals.lifecycle import wait_or_stop
from vitals.settings import Settings

T = TypeVar("T")
Decode = Callable[[ConsumerRecord], T]
Write = Callable[[list[T]], Awaitable[None]]

# The database refuses these rows, not the connection: retrying would never succeed.
RECORD_FAULTS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)


class SinkLoop(ConsumerLoop):
    """A ConsumerLoop that is ready only while its dependencies answer."""

    def __init__(self, settings: Settings, *, outage: Outage, **options: Any) -> None:
        super().__init__(settings, **options)
        self.outage = outage

    async def ready(self) -> bool:
        return self.outage.up and await super().ready()

    def rewind(self, records: Sequence[ConsumerRecord]) -> None:
        """Seek back so the next poll returns these records again."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        assigned = self.consumer.assignment()
        for tp, offset in first.items():
            # A partition revoked meanwhile goes to another member, which starts from
            # the last commit: the batch is redelivered there.
            if tp in assigned:
                self.consumer.seek(tp, offset)

    async def write_durably(
        self,
        records: Sequence[ConsumerRecord],
        decode: Decode[T],
        write: Write[T],
        stop: asyncio.Event,
    ) -> Commit:
        """None (commit the batch) once written and parked; {} (commit nothing) if not."""
        good: list[tuple[ConsumerRecord, T]] = []
        bad: list[tuple[ConsumerRecord, Exception]] = []
        for record in records:
            try:
                good.append((record, decode(record)))
            except ContractError as exc:
                bad.append((record, exc))
        try:
            bad.extend(await _write_isolating(good, write))
            for record, refused in bad:
                await self.park(record, refused)
        except TRANSIENT as exc:
            delay = self.outage.failed(exc)
            self.rewind(records)
            await wait_or_stop(stop, delay)
            return {}
        self.outage.succeeded()
        return None


async def _write_isolating(
    pairs: list[tuple[ConsumerRecord, T]], write: Write[T]
) -> list[tuple[ConsumerRecord, Exception]]:
    """Write all; on a record fault, bisect to find the records the database refuses."""
    if not pairs:
        return []
    try:
        await write([item for _, item in pairs])
        return []
    except RECORD_FAULTS as exc:
        if len(pairs) == 1:
            return [(pairs[0][0], exc)]
    middle = len(pairs) // 2
    return await _write_isolating(pairs[:middle], write) + await _write_isolating(
        pairs[middle:], write
    )

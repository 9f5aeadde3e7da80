"""A sink's database: one asyncpg pool with an explicit lifetime, migrations, a health ping.

The pool starts empty (min_size=0), so a sink starts, serves its probes and reports
not-ready while the database is down, instead of failing to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiokafka.errors import KafkaError

from sinks.outage import Outage
from vitals.db.migrate import migrate
from vitals.errors import InfrastructureError
from vitals.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
ACQUIRE_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0  # a COPY of a full batch takes well under a second
PING_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 10.0

# Failures that pass: the batch is kept and retried. Everything else is a bug and stops
# the process (nothing of the batch is committed either way).
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    KafkaError,
    InfrastructureError,
)


class Database:
    """`async with Database(...) as db`: the pool lives exactly as long as the block."""

    def __init__(self, settings: Settings, outage: Outage, *, migrate_first: bool) -> None:
        self._url = settings.database_url
        self._retention = settings  # its retention settings, applied by the migration
        self._outage = outage
        self._migrate_first = migrate_first
        self._pool: asyncpg.Pool | None = None
        self._used = False

    async def __aenter__(self) -> Database:
        # One connection: the loop writes one batch at a time and pings between batches.
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=0,
            max_size=1,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is None:
            return
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, after the schema is migrated (when asked to)."""
        assert self._pool is not None, "use Database inside `async with`"
        self._used = True
        await self._ensure_schema()
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            yield conn

    async def check(self) -> None:
        """Ping when idle, so readiness follows the database without traffic too.

        While batches flow their own outcome updates the outage; a ping then would only
        repeat it.
        """
        if self._used:
            self._used = False
            return
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
        except TRANSIENT as exc:
            self._outage.failed(exc)
        else:
            self._outage.succeeded()
        self._used = False

    async def _ensure_schema(self) -> None:
        if not self._migrate_first:
            return
        applied = await asyncio.to_thread(migrate, self._url, retention=self._retention)
        log.info("schema up to date", extra={"applied": applied})
        self._migrate_first = False

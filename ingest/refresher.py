"""Keeps the registry (keys, devices) in memory, reloaded from the database periodically.

The gateway holds its keys, admin tokens and devices (`registry_store.load`); the read API
holds reader keys (`registry_store.load_readers`).

Requests read `current()`, never the database. A failed reload keeps the last good copy
(a database blip must not lock every gateway out) and is counted and logged; readiness
waits only for the first load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from ingest import metrics, registry_store
from ingest.registry import EMPTY, Snapshot, with_env_credentials

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 10.0


Loader = Callable[[asyncpg.Connection], Awaitable[Snapshot]]


class RegistryCache:
    def __init__(
        self,
        env_credentials: Mapping[str, str],
        *,
        kind: str = "gateway",
        load: Loader = registry_store.load,
    ) -> None:
        """`env_credentials`: token -> principal from the environment, of `kind`."""
        self._env = dict(env_credentials)
        self._kind = kind
        self._load = load
        self._snapshot = with_env_credentials(EMPTY, self._env, kind)

    def current(self) -> Snapshot:
        return self._snapshot

    def replace(self, snapshot: Snapshot) -> None:
        self._snapshot = with_env_credentials(snapshot, self._env, self._kind)

    async def refresh(self, pool: asyncpg.Pool) -> bool:
        """One reload; True when it succeeded."""
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                async with pool.acquire() as conn:
                    snapshot = await self._load(conn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            metrics.REGISTRY_REFRESHES.labels("failed").inc()
            log.warning(
                "registry reload failed; serving the last good copy",
                extra={"error": type(exc).__name__, "loaded": self._snapshot.loaded},
            )
            return False
        self.replace(snapshot)
        metrics.REGISTRY_REFRESHES.labels("ok").inc()
        metrics.REGISTRY_LOADED_AT.set(time.time())
        return True

    async def run(self, pool: asyncpg.Pool, every_s: float) -> None:
        """Reload every `every_s` until cancelled; retry sooner while never loaded."""
        while True:
            ok = await self.refresh(pool)
            await asyncio.sleep(every_s if ok or self._snapshot.loaded else min(every_s, 1.0))

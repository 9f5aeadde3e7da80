"""Keeps the registry (keys, devices) in memory, reloaded from the database periodically.

The gateway holds its keys, admin tokens and devices (`registry_store.load`); the read API
holds reader keys (`registry_store.load_readers`).

Requests read `current()`, never the database. A failed reload keeps the last good copy
(a database blip must not lock every gateway out) and is counted and logged. A copy that
grows old is not trusted for ever: past `max_age_s` (VITALS_REGISTRY_MAX_AGE_S, by
default 3 reloads) `fresh()` is False and `/readyz` answers 503, so revocations and new
devices never lag by more than that on a replica that takes traffic. `run` is started
under vitals.supervise: a failure other than the database's (a bug, a row the loader
cannot convert that slipped through) is logged and counted there, and the reloads start
again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from frontdoor import metrics, registry_store
from frontdoor.registry import EMPTY, Snapshot, with_env_credentials

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 10.0
# The database was away or slow: keep the last good copy and try again.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

Loader = Callable[[asyncpg.Connection], Awaitable[Snapshot]]


class RegistryCache:
    def __init__(
        self,
        env_credentials: Mapping[str, str],
        *,
        kind: str = "gateway",
        load: Loader = registry_store.load,
        max_age_s: float = math.inf,
    ) -> None:
        """`env_credentials`: token -> principal from the environment, of `kind`."""
        self._env = dict(env_credentials)
        self._kind = kind
        self.load = load  # what a reload runs (a test may put a failing one here)
        self._max_age_s = max_age_s
        self._snapshot = with_env_credentials(EMPTY, self._env, kind)
        # Until the first load the age counts from the start: a replica that never loads
        # shows an age growing like one whose reloads stopped.
        self._loaded_at = time.monotonic()
        metrics.REGISTRY_AGE.labels(kind).set_function(self.age_s)

    def current(self) -> Snapshot:
        return self._snapshot

    def age_s(self) -> float:
        """Seconds since the copy in memory was loaded (or since start, before that)."""
        return time.monotonic() - self._loaded_at

    def fresh(self) -> bool:
        """Loaded, and not older than the bound: fit to take traffic."""
        return self._snapshot.loaded and self.age_s() <= self._max_age_s

    def replace(self, snapshot: Snapshot) -> None:
        self._snapshot = with_env_credentials(snapshot, self._env, self._kind)
        self._loaded_at = time.monotonic()

    async def refresh(self, pool: asyncpg.Pool) -> bool:
        """One reload; True when it succeeded, False when the database failed it. Any
        other exception is a bug: counted as a failed reload and raised."""
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                async with pool.acquire() as conn:
                    snapshot = await self.load(conn)
        except TRANSIENT as exc:
            metrics.REGISTRY_REFRESHES.labels("failed").inc()
            log.warning(
                "registry reload failed; serving the last good copy",
                extra={"error": type(exc).__name__, "loaded": self._snapshot.loaded},
            )
            return False
        except Exception:
            metrics.REGISTRY_REFRESHES.labels("failed").inc()
            raise
        self.replace(snapshot)
        metrics.REGISTRY_REFRESHES.labels("ok").inc()
        metrics.REGISTRY_LOADED_AT.set(time.time())
        return True

    async def run(self, pool: asyncpg.Pool, every_s: float) -> None:
        """Reload every `every_s` until cancelled; retry sooner while never loaded."""
        while True:
            ok = await self.refresh(pool)
            await asyncio.sleep(every_s if ok or self._snapshot.loaded else min(every_s, 1.0))

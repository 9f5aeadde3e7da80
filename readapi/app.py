"""The read API application: create_app(settings); its lifespan owns a read-only pool, the
reader keys' reloads (issued keys with their care teams from the database, plus
VITALS_READER_CREDENTIALS), the read audit's writer and the console's live feed."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter, Histogram

from frontdoor import apidocs, problems, registry_store
from frontdoor.auth import Authenticator
from frontdoor.metrics import RequestMetrics
from frontdoor.ratelimit import TokenBuckets
from frontdoor.refresher import RegistryCache
from readapi import (
    alert_routes,
    burden,
    fhir,
    fhir_alerts,
    fhir_capability,
    history,
    live_routes,
    routes,
)
from readapi.access import Access
from readapi.audit import ReadAudit
from readapi.live import Feed
from vitals.settings import Settings
from vitals.supervise import supervise

CONSOLE = Path(__file__).resolve().parent / "console"
POOL_CONNECT_TIMEOUT_S = 5.0
POOL_MAX = 10

REQUESTS = Counter(
    "vitals_api_requests_total", "Read API requests by route and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "vitals_api_request_seconds",
    "Read API time from request start to the end of the answer, by route and status",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def create_app(settings: Settings) -> FastAPI:
    # Only reader keys: a gateway key or admin token is unknown here (the loader reads the
    # reader_keys view, the environment tokens are readers').
    keys = RegistryCache(
        settings.readers(),
        kind="reader",
        load=registry_store.load_readers,
        max_age_s=settings.registry_age_bound_s(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # min_size=0: the API starts while the database is down; /readyz says when it is up.
        pool = await asyncpg.create_pool(
            settings.api_database_url or settings.database_url,
            min_size=0,
            max_size=POOL_MAX,
            timeout=POOL_CONNECT_TIMEOUT_S,
            # Read-only sessions whatever role the URL logs in as (deployments also give the
            # API a login role with only vitals_reader), and no query runs unbounded.
            server_settings={
                "default_transaction_read_only": "on",
                "statement_timeout": str(round(settings.api_statement_timeout_s * 1000)),
                "application_name": "vitals-api",
            },
        )
        app.state.pool = pool
        audit = ReadAudit(
            pool,
            queue_max=settings.audit_queue_max,
            batch_max=settings.audit_batch_max,
            flush_s=settings.audit_flush_s,
        )
        app.state.access = Access(
            keys.current,
            audit,
            requests=_buckets(settings.api_rate_limit_per_s, settings.api_rate_limit_burst),
            rows=_buckets(settings.api_rows_per_minute / 60, settings.api_rows_per_minute),
            retry_after_s=settings.retry_after_s,
        )
        tasks = [
            supervise("reader-keys-refresh", lambda: keys.run(pool, settings.registry_refresh_s)),
            supervise("read-audit-writer", audit.run),
            # Restarted like the others when the broker is away; /readyz says whether it
            # reads, and the streams' snapshots keep the board current meanwhile.
            supervise("live-feed", app.state.feed.run),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.shutdown_grace_s):
                    await audit.flush()  # the last requests' reads
            try:
                await asyncio.wait_for(pool.close(), settings.shutdown_grace_s)
            except TimeoutError:
                pool.terminate()

    app = FastAPI(
        title="vitals read API",
        version=apidocs.API_VERSION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN; apidocs serves them offline
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.feed = Feed(settings)
    # Without a configured key, one per process: cursors then work only on the replica
    # that issued them (fine for one local process; docs/read-api.md).
    configured = settings.api_cursor_key.get_secret_value().encode()
    app.state.cursor_key = configured or secrets.token_bytes(32)
    app.state.authenticator = Authenticator(keys.current)
    app.include_router(routes.router)
    app.include_router(fhir.router)
    app.include_router(fhir_capability.router)
    app.include_router(fhir_alerts.router)
    app.include_router(alert_routes.router)
    app.include_router(live_routes.router)
    app.include_router(history.router)
    app.include_router(burden.router)
    # The console (issue 16): static files shipped in the package, no CDN; the page signs
    # in with a reader key and reads the API above like any other reader.
    app.mount("/console", StaticFiles(directory=CONSOLE, html=True), name="console")
    problems.install(app)
    apidocs.install(app)
    app.add_middleware(RequestMetrics, requests=REQUESTS, seconds=REQUEST_SECONDS)
    return app


def _buckets(rate_per_s: float, burst: float) -> TokenBuckets | None:
    """Per reader key; a rate of 0 turns the limit off."""
    return TokenBuckets(rate_per_s, max(1, round(burst))) if rate_per_s > 0 else None

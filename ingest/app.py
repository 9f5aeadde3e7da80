"""The gateway application: create_app(settings) builds it; its lifespan owns the producer,
and with `gateway_registry` the database pool, the registry reloads and the audit writer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from ingest import admin, openapi, problems, routes
from ingest.audit import AuditTrail
from ingest.auth import Authenticator
from ingest.headerlimit import HeaderLimits
from ingest.idempotency import IdempotencyCache
from ingest.intake import Guards, Intake
from ingest.metrics import RequestMetrics
from ingest.publisher import Publisher
from ingest.ratelimit import TokenBuckets
from ingest.refresher import RegistryCache
from vitals.settings import Settings

POOL_CONNECT_TIMEOUT_S = 5.0


def create_app(settings: Settings) -> FastAPI:
    registry = RegistryCache(settings.credentials())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Entering does not wait for Kafka nor for the database: both connect in the
        # background and /readyz says when they have.
        async with Publisher(settings) as publisher, _database(settings) as pool:
            audit = AuditTrail(
                pool,
                queue_max=settings.audit_queue_max,
                batch_max=settings.audit_batch_max,
                flush_s=settings.audit_flush_s,
            )
            limiter = (
                TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
                if settings.rate_limit_per_s > 0
                else None
            )
            guards = Guards(
                limiter=limiter,
                registry=registry.current if settings.require_device_registry else None,
                audit=audit,
            )
            app.state.publisher = publisher
            app.state.pool = pool
            app.state.intake = Intake(
                settings, publisher, IdempotencyCache(settings.idempotency_cache_size), guards
            )
            tasks: list[asyncio.Task[None]] = []
            if pool is not None:
                tasks.append(asyncio.create_task(registry.run(pool, settings.registry_refresh_s)))
                tasks.append(asyncio.create_task(audit.run()))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.shutdown_grace_s):
                        await audit.flush()  # what the last requests recorded

    # No Swagger UI (it loads scripts from a CDN); /openapi.json stays for client tooling.
    app = FastAPI(title="vitals gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.registry = registry
    app.state.pool = None
    app.state.authenticator = Authenticator(registry.current)
    app.include_router(routes.router)
    if settings.gateway_registry:
        app.include_router(admin.router)
    problems.install(app)
    openapi.install(app, settings)
    app.add_middleware(
        HeaderLimits, max_bytes=settings.max_header_bytes, max_count=settings.max_header_count
    )
    app.add_middleware(RequestMetrics)  # outermost: counts the 431s too
    return app


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[asyncpg.Pool | None]:
    """A small pool (registry reloads, audit writes, admin API) when the registry is on."""
    if not settings.gateway_registry:
        yield None
        return
    # min_size=0: creating the pool opens no connection, so a database that is down
    # delays readiness instead of failing the start.
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=0, max_size=3, timeout=POOL_CONNECT_TIMEOUT_S
    )
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), settings.shutdown_grace_s)
        except TimeoutError:
            pool.terminate()

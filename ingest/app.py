"""The gateway application: create_app(settings) builds it; its lifespan owns the producer,
and with `gateway_registry` the database pool, the registry reloads and the audit writer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from frontdoor import apidocs, problems
from frontdoor.audit import AuditTrail
from frontdoor.auth import Authenticator
from frontdoor.metrics import RequestMetrics
from frontdoor.ratelimit import TokenBuckets
from frontdoor.refresher import RegistryCache
from ingest import admin, openapi, routes
from ingest.fhir.route import PATHS as FHIR_PATHS
from ingest.fhir.route import PostBundle
from ingest.idempotency import IdempotencyCache
from ingest.intake import Guards, Intake
from ingest.metrics import REQUEST_SECONDS, REQUESTS
from ingest.publisher import Publisher
from vitals.settings import Settings
from vitals.supervise import supervise

POOL_CONNECT_TIMEOUT_S = 5.0


UPLOAD_PATH = "/v1/readings"


class GatewayApp(FastAPI):
    """FastAPI, with POST /v1/readings taken before FastAPI's own layers.

    FastAPI wraps every request in telemetry, body-limit and exception middleware, routing
    and dependency injection: on the upload path that cost more than validating 50
    readings. Uploads go straight to routes.PostReadings (counted like every other
    request); everything else, including other methods on the same path (405), is FastAPI's.
    Request heads are bounded below the app, in frontdoor/protocol.py.
    """

    upload: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == UPLOAD_PATH and scope["method"] == "POST":
            scope["app"] = self
            await self.upload(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> GatewayApp:
    registry = RegistryCache(settings.credentials(), max_age_s=settings.registry_age_bound_s())

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
            cache = IdempotencyCache(
                settings.idempotency_cache_size, settings.idempotency_cache_bytes
            )
            app.state.intake = Intake(settings, publisher, cache, guards)
            tasks: list[asyncio.Task[None]] = []
            if pool is not None:
                refresh_s = settings.registry_refresh_s
                tasks.append(supervise("registry-refresh", lambda: registry.run(pool, refresh_s)))
                tasks.append(supervise("audit-writer", audit.run))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.shutdown_grace_s):
                        await audit.flush()  # what the last requests recorded

    # FastAPI's doc pages load their scripts from a CDN: apidocs serves them from a package.
    app = GatewayApp(
        title="vitals gateway",
        version=apidocs.API_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.pool = None
    app.state.authenticator = Authenticator(registry.current)
    post_readings = routes.PostReadings()
    app.upload = RequestMetrics(post_readings, REQUESTS, REQUEST_SECONDS, route=UPLOAD_PATH)
    app.router.routes.append(Route(UPLOAD_PATH, post_readings, methods=["POST"]))
    post_bundle = PostBundle()
    for path in FHIR_PATHS:
        app.router.routes.append(Route(path, post_bundle, methods=["POST"]))
    app.include_router(routes.router)
    if settings.gateway_registry:
        app.include_router(admin.router)
    problems.install(app)
    openapi.install(app, settings)
    apidocs.install(app)
    app.add_middleware(RequestMetrics, requests=REQUESTS, seconds=REQUEST_SECONDS)
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

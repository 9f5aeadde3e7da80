"""`vitals gateway`: the app on uvicorn until SIGTERM, then a graceful stop.

On SIGTERM uvicorn stops accepting connections, lets requests in flight finish (up to
shutdown_grace_s), then the lifespan flushes and closes the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from ingest.app import create_app
from ingest.metrics import TALLY
from ingest.problems import ProblemOnCrash
from ingest.protocol import BoundedHttp, Limits
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings

log = logging.getLogger("vitals.http")


class GatewayServer(uvicorn.Server):
    """uvicorn without its own signal handlers (vitals.lifecycle owns SIGTERM and SIGINT),
    whose tick (every 0.1 s) also enforces the connections' deadlines (ingest/protocol.py)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def on_tick(self, counter: int) -> bool:
        now = asyncio.get_running_loop().time()
        for connection in list(self.server_state.connections):
            if isinstance(connection, BoundedHttp):
                connection.expire(now)
        return await super().on_tick(counter)


def build_server(settings: Settings, app: FastAPI | None = None) -> GatewayServer:
    return http_server(
        app or create_app(settings),
        settings,
        host=settings.gateway_host,
        port=settings.gateway_port,
        **tls_options(settings),
    )


def http_server(
    app: FastAPI, settings: Settings, *, host: str, port: int, **options: Any
) -> GatewayServer:
    """uvicorn with the limits every HTTP front door shares (gateway, read API)."""
    config = uvicorn.Config(
        ProblemOnCrash(app),  # nothing escapes as uvicorn's 500 text/plain
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # keep the JSON logging set up by vitals.logs
        access_log=False,  # an access line would carry identifiers in the path
        proxy_headers=False,  # nothing uses the client's address: skip the per-request layer
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        # httptools, bounded: head size, head and body deadlines, problem+json refusals.
        http=functools.partial(BoundedHttp, limits=Limits.of(settings)),  # type: ignore[arg-type]
        ws="none",
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        limit_concurrency=settings.max_connections,  # applied by BoundedHttp: 503
        **options,
    )
    return GatewayServer(config)


def tls_options(settings: Settings) -> dict[str, Any]:
    """The gateway's TLS settings for uvicorn."""
    return tls_files(
        settings.gateway_tls_certfile, settings.gateway_tls_keyfile, settings.gateway_tls_client_ca
    )


def tls_files(certfile: str, keyfile: str, client_ca: str) -> dict[str, Any]:
    """uvicorn's TLS settings: none for plain HTTP; a client CA turns on mutual TLS."""
    if not certfile:
        return {}
    options: dict[str, Any] = {"ssl_certfile": certfile, "ssl_keyfile": keyfile}
    if client_ca:
        options["ssl_ca_certs"] = client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


async def serve(settings: Settings) -> None:
    await serve_until_stopped(build_server(settings))


async def serve_until_stopped(server: uvicorn.Server) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let requests in flight finish."""
    stop = stop_on_signals()

    async def exit_on_stop() -> None:
        await stop.wait()
        # What the graceful stop owes: these are answered before "server stopped".
        log.info("stopping", extra={"requests_in_flight": TALLY.unanswered})
        server.should_exit = True

    watcher = asyncio.create_task(exit_on_stop())
    try:
        await server.serve()
    finally:
        watcher.cancel()
        log.info("server stopped", extra=TALLY.summary())

"""`vitals gateway`: the app on uvicorn until SIGTERM, then a graceful stop.

On SIGTERM uvicorn stops accepting connections, lets requests in flight finish (up to
shutdown_grace_s), then the lifespan flushes and closes the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from ingest.app import create_app
from ingest.metrics import TALLY
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings

log = logging.getLogger("vitals.http")


class GatewayServer(uvicorn.Server):
    """uvicorn without its own signal handlers: vitals.lifecycle owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # keep the JSON logging set up by vitals.logs
        access_log=False,  # an access line would carry identifiers in the path
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        # h11, not httptools: httptools takes headers of any size and number (measured:
        # a 200 KB header and 5000 headers were both accepted), h11 refuses a request line
        # plus headers over max_header_bytes with 400 before the app sees it.
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        limit_concurrency=settings.max_connections,
        **options,
    )
    return GatewayServer(config)


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS settings: none for plain HTTP; a client CA turns on mutual TLS."""
    if not settings.gateway_tls_certfile:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": settings.gateway_tls_certfile,
        "ssl_keyfile": settings.gateway_tls_keyfile,
    }
    if settings.gateway_tls_client_ca:
        options["ssl_ca_certs"] = settings.gateway_tls_client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


async def serve(settings: Settings) -> None:
    await serve_until_stopped(build_server(settings))


async def serve_until_stopped(server: uvicorn.Server) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let requests in flight finish."""
    stop = stop_on_signals()

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(exit_on_stop())
    try:
        await server.serve()
    finally:
        watcher.cancel()
        log.info("server stopped", extra=TALLY.summary())

"""uvicorn as both front doors run it (gateway, read API): bounded HTTP, problem+json
for whatever escapes, TLS, and a graceful stop on SIGTERM.

On SIGTERM uvicorn stops accepting connections, lets requests in flight finish (up to
shutdown_grace_s), then the app's lifespan closes what it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from frontdoor.metrics import TALLY
from frontdoor.problems import ProblemOnCrash
from frontdoor.protocol import BoundedHttp, Limits
from vitals.lifecycle import stop_on_signals
from vitals.settings import Settings

log = logging.getLogger("vitals.http")


class FrontDoorServer(uvicorn.Server):
    """uvicorn without its own signal handlers (vitals.lifecycle owns SIGTERM and SIGINT),
    whose tick (every 0.1 s) also enforces the connections' deadlines (protocol.py).

    `on_stopping`, if set, is called when the stop begins, before the answers in flight
    are waited for: answers that never end by themselves (the read API's event streams)
    are told to end there, instead of holding the stop for the whole grace period."""

    on_stopping: Callable[[], None] | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_stopping is not None:
            self.on_stopping()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def on_tick(self, counter: int) -> bool:
        now = asyncio.get_running_loop().time()
        for connection in list(self.server_state.connections):
            if isinstance(connection, BoundedHttp):
                connection.expire(now)
        return await super().on_tick(counter)


def http_server(
    app: FastAPI, settings: Settings, *, host: str, port: int, **options: Any
) -> FrontDoorServer:
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
    return FrontDoorServer(config)


def tls_files(certfile: str, keyfile: str, client_ca: str) -> dict[str, Any]:
    """uvicorn's TLS settings: none for plain HTTP; a client CA turns on mutual TLS."""
    if not certfile:
        return {}
    options: dict[str, Any] = {"ssl_certfile": certfile, "ssl_keyfile": keyfile}
    if client_ca:
        options["ssl_ca_certs"] = client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


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

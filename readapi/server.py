"""`vitals api`: the read API on uvicorn until SIGTERM, then a graceful stop."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from frontdoor.server import http_server, serve_until_stopped, tls_files
from readapi.app import create_app
from vitals.settings import Settings


def build_server(settings: Settings, app: FastAPI | None = None) -> uvicorn.Server:
    app = app or create_app(settings)
    server = http_server(
        app,
        settings,
        host=settings.api_host,
        port=settings.api_port,
        **tls_files(
            settings.api_tls_certfile, settings.api_tls_keyfile, settings.api_tls_client_ca
        ),
    )
    # The console's event streams end (`closed`, server_stopping) when the stop begins.
    server.on_stopping = lambda: app.state.feed.close_all("server_stopping")
    return server


async def serve(settings: Settings) -> None:
    await serve_until_stopped(build_server(settings))

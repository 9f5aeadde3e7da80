"""`vitals api`: the read API on uvicorn until SIGTERM, then a graceful stop."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from frontdoor.server import http_server, serve_until_stopped, tls_files
from readapi.app import create_app
from vitals.settings import Settings


def build_server(settings: Settings, app: FastAPI | None = None) -> uvicorn.Server:
    return http_server(
        app or create_app(settings),
        settings,
        host=settings.api_host,
        port=settings.api_port,
        **tls_files(
            settings.api_tls_certfile, settings.api_tls_keyfile, settings.api_tls_client_ca
        ),
    )


async def serve(settings: Settings) -> None:
    await serve_until_stopped(build_server(settings))

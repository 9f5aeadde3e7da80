"""`vitals gateway`: the gateway's app on the front doors' uvicorn until SIGTERM."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from frontdoor.server import FrontDoorServer, http_server, serve_until_stopped, tls_files
from ingest.app import create_app
from vitals.settings import Settings


def build_server(settings: Settings, app: FastAPI | None = None) -> FrontDoorServer:
    return http_server(
        app or create_app(settings),
        settings,
        host=settings.gateway_host,
        port=settings.gateway_port,
        **tls_options(settings),
    )


def tls_options(settings: Settings) -> dict[str, Any]:
    """The gateway's TLS settings for uvicorn."""
    return tls_files(
        settings.gateway_tls_certfile, settings.gateway_tls_keyfile, settings.gateway_tls_client_ca
    )


async def serve(settings: Settings) -> None:
    await serve_until_stopped(build_server(settings))

"""Health, readiness and metrics over HTTP for the consumer processes.

A deliberately tiny HTTP/1.0 server on asyncio: GET /healthz, /readyz, /metrics. The
gateway serves the same paths from FastAPI instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadyCheck = Callable[[], Awaitable[bool]]


class ProbeServer:
    def __init__(self, host: str, port: int, ready: ReadyCheck) -> None:
        self._host, self._port, self._ready = host, port, ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> ProbeServer:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path == "/healthz":
                status, ctype, body = 200, "application/json", b'{"status":"ok"}'
            elif path == "/readyz":
                ok = await self._ready()
                status = 200 if ok else 503
                ctype, body = "application/json", b'{"ready":%s}' % (b"true" if ok else b"false")
            elif path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest()
            else:
                status, ctype, body = 404, "text/plain", b"not found"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

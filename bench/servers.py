"""The peers' servers, each run as its own process (`python -m bench.servers`).

- `bare`: a FastAPI endpoint that reads the body and answers 202, served by the gateway's
  own uvicorn configuration (ingest.server.build_server): the ceiling for the gateway.
- `trivial`: a raw asyncio protocol that answers every request with a fixed 202 without
  parsing it: what the load generator reaches when the server costs next to nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from fastapi import FastAPI, Request
from starlette.responses import Response

from vitals.settings import Settings

ANSWER = b'{"accepted":50,"rejected":[]}'


def bare_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)

    @app.post("/v1/readings", status_code=202)
    async def readings(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, 202, media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


class Trivial(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(ANSWER)).encode()
        + b"\r\n\r\n"
        + ANSWER
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        # Every request the load generator sends has Content-Length; answer per request.
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self.transport.write(self.RESPONSE)


async def serve_trivial(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Trivial, "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


async def serve_bare(port: int) -> None:
    from ingest.server import build_server

    server = build_server(Settings(gateway_port=port), app=bare_app())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.servers")
    parser.add_argument("kind", choices=["bare", "trivial"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    # The same event loop as `vitals gateway` (uvloop, vitalsctl.cli), so the bare endpoint
    # and the gateway differ only by what the app does.
    uvloop.run(serve_bare(args.port) if args.kind == "bare" else serve_trivial(args.port))


if __name__ == "__main__":
    main()

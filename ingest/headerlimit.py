"""Refuses requests with too many or too large headers (431) before any route runs.

h11 (ingest/server.py) refuses a request head over `max_header_bytes` only while it is
incomplete: a head that arrives whole in one socket read (up to 64 KiB) gets through it.
This middleware makes the limit exact, and adds one on the number of headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.problems import problem_response


class HeaderLimits:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_count: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) + 4 for name, value in headers)  # ": " + CRLF
            if len(headers) > self.max_count or size > self.max_bytes:
                response = problem_response(
                    431,
                    "headers_too_large",
                    "Request Header Fields Too Large",
                    f"at most {self.max_count} headers and {self.max_bytes} bytes of them",
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

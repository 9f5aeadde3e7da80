"""The HTTP/1.1 connection of every front door (gateway, read API): uvicorn's httptools
protocol with bounds on what one client can hold.

httptools (llhttp) takes request heads of any size and any number of headers, and uvicorn
bounds neither a slow head nor a slow body. Per connection, this adds:

- head size: the request target and the headers together at most `max_header_bytes`
  (each header counted as `name: value` CRLF), at most `max_header_count` headers, else
  431. Counted as the parser reports them; and since the parser keeps a header it has not
  finished without calling back, the raw bytes of a head still incomplete are counted too,
  so an endless header is refused after one socket read, not buffered.
- deadlines: the head must be complete within `header_timeout_s` of the connection (or of
  a keep-alive request's first byte), the body within `body_timeout_s` of the head; else
  408, or a plain close when not a byte of a request came. The server's tick checks them
  (ingest/server.py, every 0.1 s): no timer per request on the hot path.
- past the connection limit, 503 problem+json with Retry-After (uvicorn's is plain text).

Every refusal here is problem+json (frontdoor/problems.py's shape) and closes the connection
(after a short linger, see LINGER_S).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from frontdoor import metrics
from frontdoor.problems import PROBLEM, TYPE_PREFIX
from vitals.settings import Settings

log = logging.getLogger("vitals.http")

# The raw bytes of an unfinished head include what the exact count leaves out (method,
# HTTP version, line ends); refusing them only past this margin never refuses a head the
# exact count would take.
RAW_HEAD_MARGIN = 1024
# After a refusal the connection is half-closed and what the client still sends is read
# and dropped for this long: closing at once, with its data unread, would reset the
# connection, and a reset can destroy the answer before the client has read it.
LINGER_S = 2.0
# A request the app is answering when its connection's deadline passes: whether the
# protocol cut its body off (the app then sees a disconnect). Read by ingest/intake.py.
TIMED_OUT = "vitals.timed_out"


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float
    retry_after_s: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_header_bytes,
            settings.max_header_count,
            settings.header_timeout_s,
            settings.body_timeout_s,
            settings.retry_after_s,
        )


class HeadTooLarge(Exception):
    """Raised in a parser callback: stops parsing the head at once."""


class Refused(Exception):
    """Raised in a parser callback: the request is refused with this problem."""

    def __init__(self, status: int, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.answer = (status, code, title, detail)


# RFC 9112 section 3.2: uri-host [ ":" port ] (RFC 3986: an IP literal, or a reg-name of
# unreserved, pct-encoded and sub-delims characters, which includes IPv4 addresses).
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?")


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. It calls two private methods of
    its base, `_unset_keepalive_if_required` and `_unsupported_upgrade_warning`, as
    uvicorn's own data_received does: pyproject.toml caps uvicorn at the minor version this
    was tested with (0.55), so an upgrade that renames them is a deliberate one."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        # The connection limit is applied here (problem+json), not by uvicorn.
        self.max_concurrency, self.limit_concurrency = self.limit_concurrency, None
        self._head_bytes = 0  # request target and headers, as parsed
        self._header_count = 0
        self._raw_head = 0  # bytes received while the head is incomplete
        self._in_head = True
        self._begun = False  # a byte of the current request has come
        self._deadline: float | None = None  # loop time; None: nothing is awaited
        self._lingering = False  # refused: reading only to drop it, until the deadline

    # --- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._raw_head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse_head()
            elif isinstance(exc.__context__, Refused):
                self._refuse(*exc.__context__.answer)
            else:
                self._refuse(400, "malformed_http", "Malformed request", "not valid HTTP/1.1")
            return
        except httptools.HttpParserError:
            self._refuse(400, "malformed_http", "Malformed request", "not valid HTTP/1.1")
            return
        except httptools.HttpParserUpgrade:
            # No protocol upgrades (WebSocket) here: uvicorn's answer, a logged warning.
            self._unsupported_upgrade_warning()
            return
        if self._in_head and self._raw_head > self.limits.max_header_bytes + RAW_HEAD_MARGIN:
            self._refuse_head()

    # --- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._header_count = 0
        self._hosts: list[bytes] = []
        self._transfer_encoding: bytes | None = None
        self._begun = True
        if self._deadline is None:  # a keep-alive request: its head starts now
            self._deadline = self.loop.time() + self.limits.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (this runs for every header of every request).
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"host":
            self._hosts.append(value)
        elif name == b"transfer-encoding":
            self._transfer_encoding = value
        self.headers.append((name, value))
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        limits = self.limits
        if (
            self._head_bytes > limits.max_header_bytes
            or self._header_count > limits.max_header_count
        ):
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        self._check_framing()
        self._in_head = False
        self._deadline = self.loop.time() + self.limits.body_timeout_s
        limit = self.max_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            # uvicorn's own test, answered by _busy instead of its plain-text 503.
            metrics.HTTP_REFUSALS.labels("too_many_connections").inc()
            app, self.app = self.app, self._busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._begun = True, False
        self._raw_head = 0
        self._deadline = None  # until the next request's first byte (keep-alive idles)

    def _check_framing(self) -> None:
        """What RFC 9112 says a server must refuse and llhttp takes. llhttp itself refuses
        the rest (tests/integration/test_http_conformance.py tries each): Content-Length
        with Transfer-Encoding, an invalid or repeated Content-Length, obs-fold,
        whitespace before a colon, bare CR or LF, chunked not last or twice."""
        version = self.parser.get_http_version()
        hosts = self._hosts
        if version == "1.1" and (len(hosts) != 1 or not _HOST.fullmatch(hosts[0])):
            # Section 3.2: no Host, more than one, or an invalid one: 400.
            why = "no Host header" if not hosts else "more than one Host header"
            if len(hosts) == 1:
                why = "an invalid Host header"
            raise Refused(
                400, "bad_host", "Malformed request", f"HTTP/1.1 needs one valid Host; {why}"
            )
        coding = self._transfer_encoding
        if coding is None:
            return
        if version != "1.1":
            # Section 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
            raise Refused(
                400, "malformed_http", "Malformed request", "Transfer-Encoding needs HTTP/1.1"
            )
        if coding.strip().lower() != b"chunked":
            # Section 6.1: a transfer coding the server does not understand: 501. llhttp has
            # refused chunked that is not last; only chunked alone is ours.
            raise Refused(
                501,
                "unsupported_transfer_coding",
                "Not Implemented",
                "the only transfer coding taken is chunked (use Content-Encoding: gzip)",
            )

    # --- deadlines -----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Called by the server's tick: act on a passed deadline."""
        if self._deadline is None or now < self._deadline or self.transport.is_closing():
            return
        self._deadline = None
        if self._lingering:
            self.transport.close()
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # An answer is being written (a slow body after an early answer, or a head
            # pipelined behind it): finish it, then close; read nothing more.
            cycle.keep_alive = False
            self.flow.pause_reading()
        elif self._in_head:
            if self._begun:
                s = self.limits.header_timeout_s
                self._refuse(
                    408,
                    "header_timeout",
                    "Request head too slow",
                    f"the request line and headers did not arrive within {s:g} s",
                )
            else:  # an idle connection: nothing to answer
                self.transport.close()
        elif cycle is not None and not cycle.response_started:
            cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]
            s = self.limits.body_timeout_s
            self._refuse(
                408,
                "body_timeout",
                "Request body too slow",
                f"the body did not arrive within {s:g} s",
            )
        else:  # answered; the rest of a body still trickles in
            self.transport.close()

    # --- refusals ----------------------------------------------------------------------

    def _refuse_head(self) -> None:
        limits = self.limits
        self._refuse(
            431,
            "headers_too_large",
            "Request Header Fields Too Large",
            f"at most {limits.max_header_count} headers and {limits.max_header_bytes} bytes "
            "of request target and headers",
        )

    def _refuse(self, status: int, code: str, title: str, detail: str) -> None:
        """Answer with a problem and close: the parser's state is not to be trusted now."""
        metrics.HTTP_REFUSALS.labels(code).inc()
        log.debug("request refused by the HTTP layer", extra={"code": code, "status": status})
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app has a request of this connection: it sees a disconnect now, and
            # whatever it answers is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:  # no answer can go in the middle of another
                self.transport.close()
                return
        body = _problem(status, code, title, detail)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (PROBLEM.encode(), len(body))
        )
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self._deadline = self.loop.time() + LINGER_S

    async def _busy(self, scope: Any, receive: Any, send: Any) -> None:
        """The answer past the connection limit: the client should come back later."""
        body = _problem(
            503,
            "too_many_connections",
            "Service Unavailable",
            "the server is at its connection limit; retry after Retry-After seconds",
        )
        headers = [
            (b"content-type", PROBLEM.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.limits.retry_after_s).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _problem(status: int, code: str, title: str, detail: str) -> bytes:
    return orjson.dumps(
        {
            "type": TYPE_PREFIX + code,
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        }
    )

"""Reading a request body without trusting it: media type, encoding and size limits.

The wire size is checked from Content-Length before reading and counted again while
streaming (a chunked body has no Content-Length). A gzip body is inflated incrementally
with a cap on the output, so a gzip bomb is refused after at most `max_decompressed + 1`
bytes of output instead of being inflated whole.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping

from frontdoor.errors import Malformed, TooLarge, UnsupportedMedia

JSON = "application/json"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, not raw deflate or zlib


def check_headers(
    headers: Mapping[str, str], *, max_body_bytes: int, media_types: tuple[str, ...] = (JSON,)
) -> bool:
    """Refuse what can be refused before reading; True when the body is gzip."""
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in media_types:
        raise UnsupportedMedia(
            "unsupported_media_type",
            f"Content-Type must be {' or '.join(media_types)}, not {media_type or 'missing'}",
        )
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMedia(
            "unsupported_encoding", f"Content-Encoding {encoding} not supported; use gzip or none"
        )
    length = headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise Malformed("bad_content_length", "Content-Length is not a number") from None
        if declared > max_body_bytes:
            raise TooLarge(
                "body_too_large", f"body of {declared} bytes; at most {max_body_bytes} on the wire"
            )
    return encoding == "gzip"


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    gzip: bool,
    max_body_bytes: int,
    max_decompressed_bytes: int,
) -> bytes:
    """The (inflated) body, or TooLarge as soon as a limit is crossed."""
    inflater = Inflater(max_decompressed_bytes) if gzip else None
    parts: list[bytes] = []
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_body_bytes:
            raise TooLarge("body_too_large", f"body over {max_body_bytes} bytes on the wire")
        parts.append(inflater.feed(chunk) if inflater is not None else chunk)
    if inflater is not None:
        inflater.finish()
    return b"".join(parts)


class Inflater:
    """Incremental gzip decoding with a hard cap on the output."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.produced = 0
        self._decoder = zlib.decompressobj(GZIP_WBITS)

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            if self._decoder.eof:
                # Concatenated gzip members are one valid gzip stream (RFC 1952 2.2).
                self._decoder = zlib.decompressobj(GZIP_WBITS)
            try:
                # Ask for one byte more than the budget: getting it proves the excess
                # without inflating the rest (which stays in unconsumed_tail).
                piece = self._decoder.decompress(data, self.limit - self.produced + 1)
            except zlib.error as exc:
                raise Malformed("bad_gzip", f"body is not valid gzip: {exc}") from None
            self.produced += len(piece)
            if self.produced > self.limit:
                raise TooLarge("decompressed_too_large", f"body inflates beyond {self.limit} bytes")
            out.append(piece)
            decoder = self._decoder
            data = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        if not self._decoder.eof:
            raise Malformed("bad_gzip", "gzip body is truncated")

"""The read API's pure parts: cursors and the reader credentials setting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from frontdoor.errors import Malformed
from readapi.params import Cursor, decode_cursor, encode_cursor
from vitals.settings import Settings

KEY = b"k" * 32


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    at = datetime(2026, 3, 1, 8, 0, 0, 123457, tzinfo=UTC)
    cursor = Cursor("readings:spo2:raw", at, ("watch-1",))
    assert decode_cursor(encode_cursor(cursor, KEY), "readings:spo2:raw", KEY) == cursor


def test_a_cursor_is_refused_for_another_scope_key_or_a_changed_body() -> None:
    token = encode_cursor(
        Cursor("readings:spo2:raw", datetime(2026, 3, 1, tzinfo=UTC), ("w",)), KEY
    )
    body, _, mac = token.partition(".")
    for value, scope, key in (
        (token, "readings:spo2:1m", KEY),  # issued for another resolution
        (token, "readings:spo2:raw", b"x" * 32),  # signed by another process's key
        (body[:-2] + "AA." + mac, "readings:spo2:raw", KEY),  # its position changed
        (body, "readings:spo2:raw", KEY),  # unsigned
    ):
        with pytest.raises(Malformed) as refused:
            decode_cursor(value, scope, key)
        assert refused.value.code == "bad_cursor"


def test_reader_credentials_are_checked_and_kept_apart_from_gateway_tokens() -> None:
    settings = Settings(reader_credentials="dash:dashboard-token-1,ward:ward-token-22")
    assert settings.readers() == {"dashboard-token-1": "dash", "ward-token-22": "ward"}
    with pytest.raises(ValueError, match="reader credentials must be 'reader_id:token'"):
        Settings(reader_credentials="dash:short")
    with pytest.raises(ValueError, match="must not also be a gateway token"):
        Settings(gateway_credentials="gw:shared-token-1", reader_credentials="r:shared-token-1")

"""The read API's pure parts: cursors and the reader credentials setting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.errors import Malformed
from ingest.readapi.params import Cursor, decode_cursor, encode_cursor
from vitals.settings import Settings


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    at = datetime(2026, 3, 1, 8, 0, 0, 123457, tzinfo=UTC)
    cursor = Cursor("readings:spo2:raw", at, ("watch-1",))
    assert decode_cursor(encode_cursor(cursor), "readings:spo2:raw", 1) == cursor


def test_a_cursor_is_refused_for_another_scope_or_shape() -> None:
    token = encode_cursor(Cursor("readings:spo2:raw", datetime(2026, 3, 1, tzinfo=UTC), ("w",)))
    with pytest.raises(Malformed, match="another metric") as wrong_scope:
        decode_cursor(token, "readings:spo2:1m", 1)
    assert wrong_scope.value.code == "bad_cursor"
    with pytest.raises(Malformed, match="not one this API issued"):
        decode_cursor(token, "readings:spo2:raw", 2)


def test_reader_credentials_are_checked_and_kept_apart_from_gateway_tokens() -> None:
    settings = Settings(reader_credentials="dash:dashboard-token-1,ward:ward-token-22")
    assert settings.readers() == {"dashboard-token-1": "dash", "ward-token-22": "ward"}
    with pytest.raises(ValueError, match="reader credentials must be 'reader_id:token'"):
        Settings(reader_credentials="dash:short")
    with pytest.raises(ValueError, match="must not also be a gateway token"):
        Settings(gateway_credentials="gw:shared-token-1", reader_credentials="r:shared-token-1")

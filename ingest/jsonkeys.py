"""Repeated keys in a JSON object (`{"v": 97.3, "v": 55.5}`): refused at every door.

orjson, msgspec and the standard library all keep the last of a repeated key, so a body
could say one thing to a reader of the text and another to us. Checking every object of
every upload would cost the hot path a second parse; instead a count proves the common
case clean. Without a backslash in the body no string contains an escaped quote, so the
body holds exactly two quote characters per string (key or value); if a repeated key was
dropped by the decoder, its key (and perhaps its value) are strings in the text that are
not in the decoded document, and the counts differ. Only then (or with a backslash) is
the body parsed again, by `json`, to name the key.
"""

from __future__ import annotations

import json
from typing import Any

from frontdoor.errors import Malformed


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def refuse_repeated_keys(body: bytes, doc: Any) -> None:
    """Raise Malformed (400 malformed_json) if an object in `body` repeats a key; `doc`
    is `body` as a decoder that keeps the last of repeated keys decoded it."""
    if b"\\" not in body and body.count(b'"') == 2 * strings_in(doc):
        return
    try:
        json.loads(body, object_pairs_hook=_unique)
    except _Repeated as repeated:
        raise Malformed(
            "malformed_json", f"body is not valid JSON here: key {repeated.key!r} is repeated"
        ) from None
    except RecursionError:
        # orjson took it (depth up to 1024), json cannot: unverifiable, so not taken.
        raise Malformed(
            "malformed_json", "body is nested too deeply to check for repeated keys"
        ) from None


def strings_in(doc: Any) -> int:
    """How many strings (object keys and string values) `doc` holds."""
    count = 0
    pending = [doc]
    pop, push = pending.pop, pending.extend
    while pending:
        node = pop()
        kind = type(node)
        if kind is str:
            count += 1
        elif kind is dict:
            count += len(node)
            push(node.values())
        elif kind is list:
            push(node)
    return count


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Repeated(key[:40])
        found[key] = value
    return found

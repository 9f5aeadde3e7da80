"""The read audit's hash chain: pure functions, shared by the writer and `vitals audit verify`.

Each row's hash is SHA-256(previous row's hash + the row's canonical form), chained per
writer (one API process run) from GENESIS. Editing a row changes its canonical form, so its
stored hash no longer matches; deleting or inserting one breaks the next row's `prev_hash`
or the sequence. One writer per chain means no reads of the table to extend it: the API's
role may only insert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

GENESIS = bytes(32)
# The chained fields, in this order; prev_hash and hash follow them in the table.
FIELDS = (
    "writer",
    "seq",
    "at",
    "reader_key_id",
    "reader",
    "route",
    "patient_id",
    "outcome",
    "status",
    "row_count",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def canonical(values: Sequence[Any]) -> bytes:
    """The row (FIELDS' values) as bytes; times as exact microseconds (timestamptz keeps
    microseconds, so the form read back equals the form written)."""
    return orjson.dumps([(v - _EPOCH) // _MICRO if isinstance(v, datetime) else v for v in values])


def link(prev_hash: bytes, values: Sequence[Any]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(values)).digest()


@dataclass(frozen=True, slots=True)
class Break:
    """The first row where a chain does not hold, and why."""

    writer: str
    seq: int
    why: str


class ChainCheck:
    """Checks rows one at a time, ordered by writer then seq (a table of any size streams
    through it)."""

    def __init__(self) -> None:
        self.checked = 0
        self._writer: str | None = None
        self._prev, self._expected = GENESIS, 1

    def check(self, row: Mapping[str, Any]) -> Break | None:
        """None while the chain holds; else the first broken link."""
        writer, seq = row["writer"], row["seq"]
        if writer != self._writer:
            self._writer, self._prev, self._expected = writer, GENESIS, 1
        if seq != self._expected:
            return Break(writer, self._expected, f"row {self._expected} missing (next is {seq})")
        if bytes(row["prev_hash"]) != self._prev:
            return Break(writer, seq, "prev_hash is not the previous row's hash")
        if link(self._prev, [row[f] for f in FIELDS]) != bytes(row["hash"]):
            return Break(writer, seq, "the row does not match its hash (edited)")
        self._prev, self._expected = bytes(row["hash"]), seq + 1
        self.checked += 1
        return None


def first_break(rows: Iterable[Mapping[str, Any]]) -> Break | None:
    check = ChainCheck()
    for row in rows:
        broken = check.check(row)
        if broken is not None:
            return broken
    return None

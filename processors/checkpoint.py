"""Checkpoint records of the processor's state: what one value of vitals.processor-state holds.

Each record is one patient's state in one input partition (key `<partition>/<patient>`),
or the partition's marker (key `<partition>/`), written after every patient of a round.
A value is a fixed header and a payload:

    magic "vps1" | state version (u16) | input offset (i64) | rules fingerprint (32 bytes)
    | payload length (u32) | CRC-32 of the payload (u32) | payload

The offset is the next input offset the state reflects. The payload is a pickle read back
by `StateUnpickler`, which builds only the state classes listed below: the topic is
internal, but a pickle loader that builds anything is code execution for whoever can write
to it. Why pickle and not msgspec/orjson of explicit dataclasses: the state is ~20 slotted
classes with typed arrays and sparse checkpoints whose exact semantics the equivalence runs
prove; a hand-written schema for each would be a second copy of every field to keep in step
(a missed field is a wrong state after a restart, not an error), while a pickle round-trips
them bit for bit. STATE_VERSION changes whenever a state class changes shape.
"""

from __future__ import annotations

import array
import io
import pickle
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from processors import (
    baseline,
    engine,
    episodes,
    faults,
    news2,
    rhythm,
    rules,
    silence,
    threshold,
    tracks,
    windows,
)

STATE_VERSION = 1
MAGIC = b"vps1"
_HEADER = struct.Struct(">4sHq32sII")


class CheckpointError(Exception):
    """A record that cannot be used: the reason is safe to log (no patient id)."""


def _classes(*modules: Any) -> dict[tuple[str, str], Any]:
    found = {}
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module.__name__:
                found[(module.__name__, name)] = value
    return found


# Only classes (never functions) of the processor's state modules, and what they hold.
ALLOWED: dict[tuple[str, str], Any] = {
    **_classes(baseline, engine, episodes, faults, news2, rhythm, rules, silence, threshold),
    **_classes(tracks, windows),
    # What pickle names to rebuild a typed array, asked of array itself (a private name).
    ("array", "_array_reconstructor"): array.array("h").__reduce_ex__(3)[0],
    ("array", "array"): array.array,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "set"): set,
}


class StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get((module, name))
        if found is None:
            raise CheckpointError(f"not a state class: {module}.{name}")
        return found


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # the next input offset this state reflects
    state: Any  # None for the partition's marker


def encode(offset: int, fingerprint: bytes, state: Any = None) -> bytes:
    payload = b"" if state is None else pickle.dumps(state, protocol=5)
    header = _HEADER.pack(
        MAGIC, STATE_VERSION, offset, fingerprint, len(payload), zlib.crc32(payload)
    )
    return header + payload


def decode(value: bytes, fingerprint: bytes) -> Record:
    """The record in `value`; CheckpointError when it cannot be trusted."""
    if len(value) < _HEADER.size:
        raise CheckpointError("truncated checkpoint record")
    magic, version, offset, rules_print, length, crc = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise CheckpointError("not a checkpoint record")
    if version != STATE_VERSION:
        raise CheckpointError(f"state version {version}, this processor reads {STATE_VERSION}")
    if rules_print != fingerprint:
        raise CheckpointError("written under another rules file")
    payload = value[_HEADER.size :]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise CheckpointError("truncated checkpoint record")
    if not payload:
        return Record(offset, None)
    try:
        state = StateUnpickler(io.BytesIO(payload)).load()
    except CheckpointError:
        raise
    except Exception as exc:  # a CRC-valid payload that still fails: a bug, said so
        raise CheckpointError(f"unreadable checkpoint record ({type(exc).__name__})") from exc
    return Record(offset, state)


def key(partition: int, patient_id: str = "") -> bytes:
    """`<partition>/<patient>`; the marker is `<partition>/`."""
    return f"{partition}/{patient_id}".encode()


def split_key(raw: bytes) -> tuple[int, str]:
    partition, _, patient_id = raw.decode().partition("/")
    return int(partition), patient_id

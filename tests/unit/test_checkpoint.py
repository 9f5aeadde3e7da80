"""Checkpoint records: an engine restored from them continues exactly like one that never
stopped; a record that cannot be trusted is refused with a reason, never half-used."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from typing import Any

import pytest

from evaluation import population
from processors import checkpoint
from processors.checkpoint import CheckpointError
from processors.engine import Engine, PatientState
from processors.rules import rules_from_settings
from vitals.contract import Upload
from vitals.settings import Settings

RULES = rules_from_settings(Settings())
PRINT = b"r" * 32
PARTITIONS = 3


def fleet() -> list[Upload]:
    opts = population.Options(patients=12, hours=8.0, event_share=1.0, seed=19)
    found: list[Upload] = []
    for index in range(opts.patients):
        day = population.plan_day(index, opts)
        found += population.uploads(day, population.readings(day, opts), opts)
    return sorted(found, key=lambda u: u.received)


def feed(engine: Engine, uploads: list[Upload]) -> list[Any]:
    out: list[Any] = []
    for u in uploads:
        scores: list[Any] = []
        part = zlib.crc32(u.patient_id.encode()) % PARTITIONS
        out += engine.feed(part, u, now=u.received, scores=scores) + scores
        out += engine.check_silence({part: u.received}, u.received)
    return out


def through_records(engine: Engine, offset: int) -> Engine:
    """A new engine from `engine`'s checkpoint records, each encoded and decoded."""
    restored = Engine(RULES)
    for part in list(engine.partitions()):
        patients = {}
        for patient_id, state in engine.patients(part).items():
            record = checkpoint.decode(checkpoint.encode(offset, PRINT, state), PRINT)
            assert record.offset == offset
            patients[patient_id] = record.state
        restored.restore(part, patients)
    return restored


def test_a_restored_engine_continues_exactly_like_one_that_never_stopped() -> None:
    uploads = fleet()
    for cut in (len(uploads) // 3, 2 * len(uploads) // 3):
        never_stopped = Engine(RULES)
        feed(never_stopped, uploads[:cut])
        restored = through_records(never_stopped, cut)
        expected = feed(never_stopped, uploads[cut:])
        assert expected, "the fleet has events after the cut"
        assert feed(restored, uploads[cut:]) == expected


def test_a_silent_device_stays_silent_and_resolves_with_its_id_after_a_restore() -> None:
    engine = Engine(RULES)
    first = Upload("u-1", "gw", "watch-1", "p-quiet", 1_000_000, ())
    engine.feed(0, first, now=first.received)
    twelve_hours = first.received + 12 * 3600_000
    (opened,) = engine.check_silence({0: twelve_hours}, twelve_hours)
    restored = through_records(engine, 7)
    assert restored.check_silence({0: twelve_hours + 1}, twelve_hours + 1) == []
    back = Upload("u-2", "gw", "watch-1", "p-quiet", twelve_hours + 5, ())
    (resolved,) = restored.feed(0, back, now=back.received)
    assert (resolved.state, resolved.alert_id) == ("resolved", opened.alert_id)


def test_the_marker_has_an_offset_and_no_state() -> None:
    assert checkpoint.decode(checkpoint.encode(42, PRINT), PRINT) == checkpoint.Record(42, None)
    assert checkpoint.split_key(checkpoint.key(3, "p-1")) == (3, "p-1")
    assert checkpoint.split_key(checkpoint.key(3)) == (3, "")


def state_record() -> bytes:
    return checkpoint.encode(9, PRINT, PatientState({}, {"watch-1": (5, None)}))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (state_record()[:10], "truncated"),
        (state_record()[:-3], "truncated"),
        (b"nope" + state_record()[4:], "not a checkpoint record"),
        (state_record()[:4] + struct.pack(">H", 0) + state_record()[6:], "state version 0"),
    ],
    ids=["header", "payload", "magic", "older-version"],
)
def test_a_record_that_cannot_be_trusted_is_refused(value: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        checkpoint.decode(value, PRINT)


def test_a_record_of_another_rules_file_is_refused() -> None:
    with pytest.raises(CheckpointError, match="another rules file"):
        checkpoint.decode(state_record(), b"o" * 32)


class Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo owned",))


def test_only_state_classes_are_built_from_a_payload() -> None:
    payload = pickle.dumps(Exploit())
    header = struct.pack(
        ">4sHq32sII",
        checkpoint.MAGIC,
        checkpoint.STATE_VERSION,
        1,
        PRINT,
        len(payload),
        zlib.crc32(payload),
    )
    with pytest.raises(CheckpointError, match="not a state class: posix.system"):
        checkpoint.decode(header + payload, PRINT)

"""Idempotency-Key: a retried upload gets the first answer back instead of a second message.

Answers are kept in an LRU in memory, per gateway and key, bounded by count and by bytes:
an answer lists its rejections, so one upload of 5000 bad readings keeps ~0.5 MB, and a
count alone would let one gateway's retries hold gigabytes. While one request with
a key is being produced, others with the same key wait for it (a lock per key), so two
concurrent retries never both produce. Only 202 answers are kept: a refusal leaves
nothing behind, so the retry is tried again from scratch.

Memory only, per replica: a retry that lands on another replica (or after a restart) is
produced again, with the same upload_id (uuid5 of gateway and key); the database's
unique key per reading makes that harmless downstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from vitals import contract

Key = tuple[str, str]  # (gateway id, Idempotency-Key)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A 202 answer: its JSON body, kept as bytes (compact in the cache), and its counts."""

    upload_id: str
    content: bytes
    accepted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class Answer:
    fingerprint: bytes  # of the (inflated) body the answer was given for
    accepted: Accepted


def upload_id_for(gateway_id: str, idempotency_key: str | None) -> str:
    """Deterministic with a key, so every replica names the same upload the same way."""
    if idempotency_key is None:
        return random_uuid()
    return str(uuid.uuid5(contract.NAMESPACE, f"{gateway_id}|{idempotency_key}"))


# Ids made ahead, from one os.urandom call for a block of them: a system call per upload
# cost more than the formatting. list.pop is atomic, so no two callers get the same id;
# a forked child drops the parent's (it would hand out the same ones).
RANDOM_IDS_AHEAD = 256
_random_ids: list[str] = []
os.register_at_fork(after_in_child=_random_ids.clear)


def random_uuid() -> str:
    """str(uuid.uuid4()) from the same 16 random bytes, without building a UUID object."""
    try:
        return _random_ids.pop()
    except IndexError:
        block = os.urandom(16 * RANDOM_IDS_AHEAD)
        _random_ids.extend(_uuid4_text(block[i : i + 16]) for i in range(0, len(block), 16))
        return _random_ids.pop()


def _uuid4_text(random16: bytes) -> str:
    raw = bytearray(random16)
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # variant RFC 4122
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fingerprint(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


# What an entry costs besides its answer's body and key: the OrderedDict slot, the key
# tuple and the two dataclasses (measured with sys.getsizeof: ~420 bytes on CPython 3.11).
ENTRY_OVERHEAD = 512


def _compact(answer: Answer) -> bytes:
    return bytes(memoryview(answer.accepted.content))


def entry_size(key: Key, answer: Answer) -> int:
    accepted = answer.accepted
    strings = len(key[0]) + len(key[1]) + len(accepted.upload_id) + len(accepted.content)
    return ENTRY_OVERHEAD + strings


class IdempotencyCache:
    def __init__(self, capacity: int, max_bytes: int = 64 * 2**20) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0  # entry_size of everything held
        self._answers: OrderedDict[Key, Answer] = OrderedDict()
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}  # lock, holders + waiters

    def __len__(self) -> int:
        return len(self._answers)

    def waiting(self) -> int:
        """Keys with a request in progress (or queued behind one)."""
        return len(self._locks)

    @asynccontextmanager
    async def exclusive(self, key: Key) -> AsyncIterator[None]:
        """Serialise requests with the same key; the lock is dropped when nobody uses it."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def get(self, key: Key) -> Answer | None:
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    def put(self, key: Key, answer: Answer) -> None:
        """Keep `answer`, dropping the least recently used beyond either bound. An answer
        larger than the whole byte bound is not kept (its retry is produced again)."""
        size = entry_size(key, answer)
        if size > self.max_bytes:
            return
        # orjson returns its output in the buffer it wrote into (4 KiB at the least): kept
        # as it is, an 80-byte answer held 4 KiB, five times the byte bound's count. A copy
        # is exactly its length.
        answer = replace(answer, accepted=replace(answer.accepted, content=_compact(answer)))
        old = self._answers.pop(key, None)
        if old is not None:
            self.bytes -= entry_size(key, old)
        self._answers[key] = answer
        self.bytes += size
        while len(self._answers) > self.capacity or self.bytes > self.max_bytes:
            dropped_key, dropped = self._answers.popitem(last=False)
            self.bytes -= entry_size(dropped_key, dropped)

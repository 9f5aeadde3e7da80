"""The gateway's pure parts: body limits and gzip, bearer tokens, the idempotency cache."""

from __future__ import annotations

import asyncio
import gzip
import os
import uuid
import zlib
from collections.abc import AsyncIterator

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from frontdoor.auth import Authenticator
from frontdoor.errors import Malformed, TooLarge, Unauthenticated, UnsupportedMedia
from frontdoor.refresher import RegistryCache
from ingest.body import Inflater, check_headers, read_body
from ingest.idempotency import (
    RANDOM_IDS_AHEAD,
    Accepted,
    Answer,
    IdempotencyCache,
    entry_size,
    random_uuid,
    upload_id_for,
)
from vitals import contract
from vitals.kafka import KeyHashPartitioner

JSON_HEADERS = {"content-type": "application/json"}


# --- headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"content-type": "Application/JSON; charset=utf-8"},
        {"content-type": "application/json", "content-encoding": "identity"},
        {"content-type": "application/json", "content-length": "1000"},
    ],
)
def test_acceptable_headers_pass(headers: dict[str, str]) -> None:
    assert check_headers(headers, max_body_bytes=1000) is False


def test_gzip_is_recognised_in_any_case() -> None:
    headers = {"content-type": "application/json", "content-encoding": "GZip"}
    assert check_headers(headers, max_body_bytes=1000) is True


@pytest.mark.parametrize(
    ("headers", "error", "code"),
    [
        ({}, UnsupportedMedia, "unsupported_media_type"),
        ({"content-type": "text/plain"}, UnsupportedMedia, "unsupported_media_type"),
        ({"content-type": "application/jsonx"}, UnsupportedMedia, "unsupported_media_type"),
        ({**JSON_HEADERS, "content-encoding": "br"}, UnsupportedMedia, "unsupported_encoding"),
        ({**JSON_HEADERS, "content-encoding": "deflate"}, UnsupportedMedia, "unsupported_encoding"),
        ({**JSON_HEADERS, "content-length": "1001"}, TooLarge, "body_too_large"),
        ({**JSON_HEADERS, "content-length": "lots"}, Malformed, "bad_content_length"),
    ],
)
def test_refusable_headers_are_refused_before_reading(
    headers: dict[str, str], error: type, code: str
) -> None:
    with pytest.raises(error) as caught:
        check_headers(headers, max_body_bytes=1000)
    assert caught.value.code == code


# --- body and gzip -------------------------------------------------------------------


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_is_read_whole_within_the_limit() -> None:
    data = b"x" * 1000
    assert (
        await read_body(
            chunks_of(data, 7), gzip=False, max_body_bytes=1000, max_decompressed_bytes=1000
        )
        == data
    )


async def test_a_body_is_refused_as_soon_as_it_crosses_the_wire_limit() -> None:
    read: list[int] = []

    async def counted() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(b"x" * 10_000, 100):
            read.append(len(chunk))
            yield chunk

    with pytest.raises(TooLarge) as caught:
        await read_body(counted(), gzip=False, max_body_bytes=1000, max_decompressed_bytes=10**6)
    assert caught.value.code == "body_too_large"
    assert sum(read) == 1100  # stopped at the first chunk over the limit


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=300))
async def test_gzip_in_any_chunking_inflates_to_the_original(data: bytes, size: int) -> None:
    inflated = await read_body(
        chunks_of(gzip.compress(data), size),
        gzip=True,
        max_body_bytes=10**6,
        max_decompressed_bytes=5000,
    )
    assert inflated == data


async def test_concatenated_gzip_members_are_one_body() -> None:
    data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert (
        await read_body(
            chunks_of(data, 5), gzip=True, max_body_bytes=1000, max_decompressed_bytes=1000
        )
        == b'{"a": 1}'
    )


def test_a_gzip_bomb_is_refused_without_being_inflated() -> None:
    bomb = gzip.compress(bytes(50_000_000), compresslevel=9)  # 50 MB of zeros in ~50 KB
    inflater = Inflater(limit=1_000_000)
    with pytest.raises(TooLarge) as caught:
        for start in range(0, len(bomb), 16_384):
            inflater.feed(bomb[start : start + 16_384])
    assert caught.value.code == "decompressed_too_large"
    assert inflater.produced == 1_000_001  # one byte past the limit, not 50 MB


def test_exactly_the_limit_is_allowed() -> None:
    inflater = Inflater(limit=1000)
    assert inflater.feed(gzip.compress(b"y" * 1000)) == b"y" * 1000
    inflater.finish()


@pytest.mark.parametrize(
    "data",
    [
        b"not gzip at all",
        zlib.compress(b"{}"),  # zlib framing, not gzip
        gzip.compress(b"{}")[:-3],  # truncated trailer
        gzip.compress(b"{}") + b"trailing garbage",
        b"",
    ],
)
async def test_bad_gzip_is_malformed(data: bytes) -> None:
    with pytest.raises(Malformed) as caught:
        await read_body(
            chunks_of(data, 4), gzip=True, max_body_bytes=1000, max_decompressed_bytes=1000
        )
    assert caught.value.code == "bad_gzip"


# --- bearer tokens -------------------------------------------------------------------

TOKENS = {"token-of-gateway-a": "gw-a", "token-of-gateway-b": "gw-b"}


@pytest.mark.parametrize(
    ("header", "gateway"),
    [("Bearer token-of-gateway-a", "gw-a"), ("bearer  token-of-gateway-b ", "gw-b")],
)
def test_a_known_token_names_its_gateway(header: str, gateway: str) -> None:
    assert Authenticator(RegistryCache(TOKENS).current).gateway_for(header) == gateway


@pytest.mark.parametrize(
    ("header", "code", "challenge"),
    [
        (None, "missing_credential", 'Bearer realm="vitals"'),
        ("", "missing_credential", 'Bearer realm="vitals"'),
        ("Bearer ", "missing_credential", 'Bearer realm="vitals"'),
        ("Basic dXNlcjpwYXNz", "missing_credential", 'Bearer realm="vitals"'),
        ("token-of-gateway-a", "missing_credential", 'Bearer realm="vitals"'),
        (
            "Bearer token-of-gateway-c",
            "invalid_credential",
            'Bearer realm="vitals", error="invalid_token"',
        ),
        (
            "Bearer token-of-gateway-a2",
            "invalid_credential",
            'Bearer realm="vitals", error="invalid_token"',
        ),
    ],
)
def test_no_or_unknown_token_is_unauthenticated(
    header: str | None, code: str, challenge: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        Authenticator(RegistryCache(TOKENS).current).gateway_for(header)
    assert (caught.value.code, caught.value.challenge) == (code, challenge)


# --- idempotency ---------------------------------------------------------------------


def test_upload_id_is_deterministic_per_gateway_and_key() -> None:
    first = upload_id_for("gw-a", "key-1")
    assert first == upload_id_for("gw-a", "key-1")
    assert first == str(uuid.uuid5(contract.NAMESPACE, "gw-a|key-1"))
    assert first != upload_id_for("gw-b", "key-1")
    assert upload_id_for("gw-a", None) != upload_id_for("gw-a", None)


def test_upload_ids_without_a_key_are_random_version_4_uuids() -> None:
    ids = {random_uuid() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_a_forked_process_never_hands_out_the_ids_its_parent_made_ahead() -> None:
    random_uuid()  # the parent now holds ids made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, " ".join(random_uuid() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    parent = {random_uuid() for _ in range(RANDOM_IDS_AHEAD)}
    assert len(child) == 10
    assert not child & parent


def test_the_cache_keeps_the_most_recently_used_answers() -> None:
    cache = IdempotencyCache(capacity=2)
    answers = {k: Answer(k.encode(), Accepted(k, b"{}", 1, 0)) for k in ("a", "b", "c")}
    cache.put(("gw", "a"), answers["a"])
    cache.put(("gw", "b"), answers["b"])
    assert cache.get(("gw", "a")) == answers["a"]  # a is now the most recent
    cache.put(("gw", "c"), answers["c"])
    assert len(cache) == 2
    assert cache.get(("gw", "b")) is None
    assert cache.get(("gw", "a")) == answers["a"]
    assert cache.get(("gw", "c")) == answers["c"]


def test_the_cache_is_bounded_by_bytes_too() -> None:
    small = Answer(b"f", Accepted("s", b"x" * 100, 1, 0))
    big = Answer(b"f", Accepted("b", b"x" * 10_000, 1, 5000))  # an answer with rejections
    one_small = entry_size(("gw", "s00"), small)
    cache = IdempotencyCache(capacity=1000, max_bytes=one_small * 10)
    for i in range(10):
        cache.put(("gw", f"s{i:02d}"), small)
    assert len(cache) == 10 and cache.bytes == one_small * 10
    cache.put(("gw", "s00"), small)  # kept again: counted once
    assert cache.bytes == one_small * 10
    cache.put(("gw", "big"), big)  # larger than the whole bound: not kept, nothing dropped
    assert cache.get(("gw", "big")) is None and len(cache) == 10
    cache.put(("gw", "s10"), small)  # one more: the least recently used (s01) goes
    assert cache.get(("gw", "s01")) is None and cache.get(("gw", "s00")) == small
    assert cache.bytes == one_small * 10
    mid = Answer(b"f", Accepted("m", b"x" * (one_small * 3), 1, 0))
    cache.put(("gw", "mid"), mid)  # room made by dropping as many as needed
    assert cache.get(("gw", "mid")) == mid and cache.bytes <= cache.max_bytes
    assert len(cache) < 10


async def test_requests_with_the_same_key_run_one_at_a_time() -> None:
    cache = IdempotencyCache(capacity=10)
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def request(name: str, key: str) -> None:
        async with cache.exclusive(("gw", key)):
            inside.append(name)
            overlaps.append(tuple(inside))
            await asyncio.sleep(0)  # let the others run if they could
            await asyncio.sleep(0)
            inside.remove(name)

    await asyncio.wait_for(
        asyncio.gather(
            request("1", "k"), request("2", "k"), request("3", "k"), request("other", "j")
        ),
        5,
    )
    assert all(len([n for n in seen if n != "other"]) == 1 for seen in overlaps)
    assert any(len(seen) == 2 for seen in overlaps)  # a different key did run alongside
    assert cache.waiting() == 0  # no lock left behind


# --- Kafka partitioning ----------------------------------------------------------------


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=30), st.integers(1, 64))
def test_the_remembering_partitioner_picks_the_default_partitioners_partition(
    keys: list[bytes], partitions: int
) -> None:
    remembering = KeyHashPartitioner(max_keys=8)  # small: forgets and hashes again
    every = list(range(partitions))
    for key in keys * 2:
        assert remembering(key, every, every) == DefaultPartitioner()(key, every, every)
    assert remembering(None, every, [every[0]]) == every[0]  # no key: an available one

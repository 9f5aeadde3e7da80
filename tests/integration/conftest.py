"""Fixtures that several integration modules share (session-wide ones: tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from frontdoor import registry_store
from tests.conftest import migrated_database
from tests.support import readapi, secured_gateway
from tests.support.cli import CLI
from tests.support.ids import patient, uid
from tests.support.inprocess import take_first_generation
from tests.support.readapi import key_loaded, quick, store_open
from tests.support.secured_gateway import T0, Gateway, issue, secured
from vitals.settings import Settings


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session's database as its owner (registry, keys, teams)."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def fleet(db: asyncpg.Connection) -> dict[str, str]:
    """Two gateways with a key each, and a device of gateway A worn by one patient."""
    names = {"gw_a": uid("gw-a"), "gw_b": uid("gw-b"), "device": uid("dev"), "patient": uid("p")}
    await registry_store.register_device(
        db,
        names["device"],
        names["patient"],
        [names["gw_a"]],
        since=T0 - timedelta(days=1),
        actor=CLI,
    )
    names["key_a"] = await issue(db, names["gw_a"])
    names["key_b"] = await issue(db, names["gw_b"])
    return names


@pytest.fixture
def fresh_url(pg_server: str) -> Iterator[str]:
    """A migrated database of the test's own (for tests that edit or drop the read audit,
    or that look at every alert stored)."""
    yield from migrated_database(pg_server, "vitals_own")


@pytest.fixture
async def gateway(settings: Settings, fleet: dict[str, str]) -> AsyncIterator[Gateway]:
    """The gateway with the registry enforced, started after the fleet exists so its first
    load has it. test_gateway.py has a `gateway` of its own: the plain one, no registry."""
    async with secured_gateway.running(secured(settings)) as gw:
        yield gw


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # Two `running`s (the gateway's and the read API's): named by their modules here.
    async with readapi.running(quick(database_url, api_rate_limit_per_s=0)) as client:
        yield client


@pytest.fixture
async def ward(
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> dict[str, Any]:
    """A team with one patient and its key (loaded by the API); another team's patient;
    an alert of each."""
    team, other = uid("ward"), uid("ward")
    mine, theirs = patient(), patient()
    for t, p in ((team, mine), (other, theirs)):
        await registry_store.add_team(db, t, actor=CLI)
        await registry_store.assign_patients(db, t, [p], assign=True, actor=CLI)
    _, key = await registry_store.issue_key(
        db, "reader", f"nurse-{team}", expires_at=None, actor=CLI, teams=[team]
    )
    await key_loaded(api, key, mine)
    return {
        "key": key, "principal": f"nurse-{team}", "mine": mine, "theirs": theirs,
        "alert": await store_open(db, mine), "their_alert": await store_open(db, theirs),
    }  # fmt: skip


@pytest.fixture
async def own(settings: Settings) -> Settings:
    """The test's settings with a processor group of its own and a quick tick (the sink
    suites have an `own` of their own: their group)."""
    own = settings.model_copy(
        update={
            "processor_group": f"proc-{uuid.uuid4().hex[:8]}",
            "silence_check_interval_s": 0.5,
        }
    )
    await take_first_generation(own)
    return own

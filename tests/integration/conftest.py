"""Fixtures that several integration modules share (session-wide ones: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest

from frontdoor import registry_store
from tests.conftest import migrated_database
from tests.support.cli import CLI
from tests.support.ids import uid
from tests.support.secured_gateway import T0, Gateway, issue, running, secured
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
    async with running(secured(settings)) as gw:
        yield gw

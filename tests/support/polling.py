"""Waiting for a condition in integration tests: poll, and fail with what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

WAIT_S = 30.0


async def until(check: Callable[[], object], what: str, within_s: float = WAIT_S) -> None:
    """Poll `check` (plain or async) until it holds; fail naming `what` after `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)

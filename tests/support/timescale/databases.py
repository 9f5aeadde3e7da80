"""One small interface over the databases the storage checks run on.

`Pglite`: TimescaleDB compiled to WASM, driven through engine.mjs (Node) over JSON lines;
what runs on machines without a TimescaleDB server. `Server`: a real PostgreSQL or
TimescaleDB server through asyncpg, the sinks' own driver. Both take `$n` parameters as
Python values and return rows as dicts of Python values, so the same checks run on both.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

HERE = Path(__file__).resolve().parent
ENGINE = HERE / "engine.mjs"
PACKAGE = HERE / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
REQUEST_TIMEOUT_S = 60.0

Row = dict[str, Any]

# PostgreSQL type oids whose JSON form (a string) is turned back into a Python value.
_TIMESTAMPTZ, _UUID = 1184, 2950


class Database(Protocol):
    timescale: bool

    async def fetch(self, sql: str, *params: object) -> list[Row]: ...

    async def execute(self, sql: str, *params: object) -> int:
        """Runs one statement; returns the rows it inserted, updated or deleted."""

    async def script(self, sql: str) -> None:
        """Runs several statements at once (simple protocol), as migrations are run."""

    def transaction(self) -> Any: ...


class EngineError(RuntimeError):
    """An error from the WASM engine: a failed statement (with its SQLSTATE) or a crash."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(f"{message} (SQLSTATE {code})" if code else message)
        self.code = code


def engine_problem() -> str | None:
    """Why the WASM engine cannot start here, or None when it can."""
    if shutil.which("node") is None:
        return (
            "node is not installed: the TimescaleDB engine check runs PGlite+TimescaleDB "
            "under Node >= 18 (or set VITALS_TEST_CONTAINERS=1 on a machine with Docker)"
        )
    if not PACKAGE.exists():
        return (
            "the engine's npm package is missing: run `npm ci --prefix tests/support/timescale` "
            "(make test does it when npm is installed)"
        )
    return None


class Pglite:
    """An in-memory TimescaleDB database in one Node process: one session; `reset` swaps
    in a fresh, empty database."""

    timescale = True

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._next_id = 0

    @classmethod
    @asynccontextmanager
    async def started(cls) -> AsyncIterator[Pglite]:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(ENGINE),
            cwd=HERE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # one answer is one line, however many rows it has
        )
        try:
            yield cls(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _request(self, **request: object) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._next_id += 1
        request["id"] = self._next_id
        self._process.stdin.write(json.dumps(request, default=_jsonable).encode() + b"\n")
        await self._process.stdin.drain()
        line = await asyncio.wait_for(self._process.stdout.readline(), REQUEST_TIMEOUT_S)
        if not line:
            stderr = b""
            if self._process.stderr is not None:
                stderr = await self._process.stderr.read()
            raise EngineError(f"engine.mjs exited: {stderr.decode(errors='replace')[-2000:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise EngineError(answer["error"], answer.get("code"))
        return answer

    async def reset(self) -> None:
        await self._request(reset=True)

    async def fetch(self, sql: str, *params: object) -> list[Row]:
        answer = await self._request(sql=sql, params=list(params))
        types = {f["name"]: f["type"] for f in answer["fields"]}
        return [{k: _python(v, types.get(k)) for k, v in row.items()} for row in answer["rows"]]

    async def execute(self, sql: str, *params: object) -> int:
        answer = await self._request(sql=sql, params=list(params))
        return int(answer["affected"])

    async def script(self, sql: str) -> None:
        await self._request(script=sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self.script("BEGIN")
        try:
            yield
        except BaseException:
            await self.script("ROLLBACK")
            raise
        await self.script("COMMIT")


class Server:
    """A database on a PostgreSQL or TimescaleDB server, through asyncpg."""

    def __init__(self, conn: asyncpg.Connection, timescale: bool) -> None:
        self._conn = conn
        self.timescale = timescale

    @classmethod
    @asynccontextmanager
    async def connected(cls, url: str, *, timescale: bool) -> AsyncIterator[Server]:
        conn = await asyncpg.connect(url)
        try:
            # asyncpg hands jsonb over as text; the WASM engine gives objects.
            for name in ("json", "jsonb"):
                await conn.set_type_codec(
                    name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )
            yield cls(conn, timescale)
        finally:
            await conn.close()

    async def fetch(self, sql: str, *params: object) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(sql, *params)]

    async def execute(self, sql: str, *params: object) -> int:
        status = await self._conn.execute(sql, *params)
        count = status.rsplit(" ", 1)[-1]  # "INSERT 0 3", "UPDATE 2", "CALL"
        return int(count) if count.isdigit() else 0

    async def script(self, sql: str) -> None:
        # asyncpg fails on a script of comments only (the server answers EmptyQuery), as
        # the base file of a TimescaleDB-only migration is; psycopg and PGlite accept it.
        if any(line.strip() and not line.lstrip().startswith("--") for line in sql.splitlines()):
            await self._conn.execute(sql)

    def transaction(self) -> Any:
        return self._conn.transaction()


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to the engine")


def _python(value: object, type_oid: int | None) -> object:
    if value is None:
        return None
    if type_oid == _TIMESTAMPTZ and isinstance(value, str):
        return datetime.fromisoformat(value)
    if type_oid == _UUID and isinstance(value, str):
        return uuid.UUID(value)
    return value


def values(rows: Sequence[Row], *names: str) -> list[tuple[Any, ...]]:
    """The named columns of `rows`, as tuples: compact to assert on."""
    return [tuple(row[n] for n in names) for row in rows]

"""`vitals audit verify` and `vitals audit reads`: the read audit, from an operator's shell.

`verify` recomputes every writer's hash chain (frontdoor/chain.py) and reports the
first broken link (exit 1); `reads` answers "who read this patient's data" over a range.
Both read `read_audit` at VITALS_DATABASE_URL (the owner's, or a role granted SELECT on it:
the API's own role cannot read it). Output never goes to the logs.
"""

from __future__ import annotations

import argparse
from datetime import datetime

import asyncpg
import orjson

from frontdoor import chain
from vitals.errors import ConfigError, InfrastructureError
from vitals.settings import Settings

CONNECT_TIMEOUT_S = 10.0
_CHAIN = f"SELECT {', '.join(chain.FIELDS)}, prev_hash, hash FROM read_audit ORDER BY writer, seq"
_READS = """
SELECT at, reader, reader_key_id, route, outcome, status, row_count FROM read_audit
WHERE patient_id = $1 AND at >= $2 AND at < $3
ORDER BY at"""


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="the read audit").add_subparsers(
        dest="action", required=True
    )
    audit.add_parser("verify", help="check every hash chain; report the first broken link")
    reads = audit.add_parser("reads", help="who read this patient's data, and when")
    reads.add_argument("--patient", required=True)
    reads.add_argument("--from", dest="start", required=True, type=_moment, help="ISO 8601")
    reads.add_argument("--to", dest="end", required=True, type=_moment, help="ISO 8601")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise InfrastructureError(f"database unreachable: {exc}") from exc
    try:
        if args.action == "verify":
            return await _verify(conn)
        for row in await conn.fetch(_READS, args.patient, args.start, args.end):
            print(orjson.dumps(dict(row), default=str).decode())
        return 0
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError(f"{exc}: run `vitals db migrate` first") from exc
    finally:
        await conn.close()


async def _verify(conn: asyncpg.Connection) -> int:
    # A server-side cursor: the table can be far larger than memory.
    check = chain.ChainCheck()
    broken = None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(_CHAIN, prefetch=5_000):
            broken = check.check(row)
            if broken is not None:
                break
    if broken is None:
        print(f"read audit intact: {check.checked} rows")
        return 0
    print(
        f"read audit BROKEN at writer {broken.writer} row {broken.seq}: {broken.why}"
        f" ({check.checked} rows intact before it)"
    )
    return 1


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give an offset (Z or +hh:mm)")
    return moment

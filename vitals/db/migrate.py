"""Schema migrations: versioned SQL files applied in order, once, each in a transaction.

Files in `migrations/` are named `NNNN_name.sql`. A version may have companions applied
right after it: `NNNN_name.timescale.sql` when the `timescaledb` extension is available,
`NNNN_name.plain.sql` otherwise (plain indexes, where TimescaleDB would use its own).
A database keeps the flavour it was first migrated with: a server that gained the
extension later does not get TimescaleDB companions on top of plain ones (they cannot
apply there, and each that did would commit half a conversion). Every applied file is
recorded in `schema_migrations` by its name without `.sql`, so a second run applies
nothing. A session advisory lock serialises concurrent starts (several sinks starting at
once): the second waits, then finds everything applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from vitals.db import retention as retention_policies
from vitals.errors import ConfigError, InfrastructureError
from vitals.settings import RetentionSettings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Any constant bigint will do; this one is b"vitalsmi" read as an integer.
LOCK_KEY = int.from_bytes(b"vitalsmi", "big")

_NAME = re.compile(
    r"^(?P<version>\d{4})_(?P<title>[a-z0-9_]+)(?:\.(?P<flavour>timescale|plain))?\.sql$"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file name without ".sql": what schema_migrations records
    flavour: str | None  # None (always), "timescale" or "plain"
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(folder: Path = MIGRATIONS) -> list[Migration]:
    """Every migration file in `folder`, checked for a consistent naming and numbering."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ConfigError(
                f"migration file {path.name!r} is not named NNNN_name[.timescale|.plain].sql"
            )
        found.append(Migration(int(match["version"]), path.name[:-4], match["flavour"], path))
    bases: dict[int, str] = {}
    for m in found:
        if m.flavour is None:
            if m.version in bases:
                raise ConfigError(
                    f"two migrations numbered {m.version:04d}: {bases[m.version]}, {m.name}"
                )
            bases[m.version] = m.name
    for m in found:
        base = m.name.rsplit(".", 1)[0]
        if m.flavour is not None and bases.get(m.version) != base:
            raise ConfigError(f"companion {m.name} has no base migration {base}.sql")
    return found


def plan(migrations: list[Migration], *, timescale: bool) -> list[Migration]:
    """The files to apply on this server, in order: each base, then its fitting companion."""
    wanted = "timescale" if timescale else "plain"
    chosen = [m for m in migrations if m.flavour in (None, wanted)]
    # Base before companion within a version: None sorts first.
    return sorted(chosen, key=lambda m: (m.version, m.flavour is not None))


# A row when the server can load TimescaleDB: then plan(..., timescale=True) is applied.
TIMESCALE_AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"


def timescale_available(conn: psycopg.Connection) -> bool:
    return conn.execute(TIMESCALE_AVAILABLE).fetchone() is not None


def flavour_of(applied: set[str], available: bool) -> bool:
    """Whether to apply the TimescaleDB companions: as the database was made, when any
    companion is recorded; else as the server offers. InfrastructureError when the database
    needs the extension the server no longer offers."""
    made = {name.rsplit(".", 1)[1] for name in applied if name.endswith((".plain", ".timescale"))}
    if "timescale" in made and not available:
        raise InfrastructureError(
            "the database was migrated with TimescaleDB, but this server does not offer the "
            "timescaledb extension (docs/storage.md, Supported versions)"
        )
    if "plain" in made:
        if available:
            log.warning(
                "timescaledb is available, but this database was made for plain PostgreSQL; "
                "it stays plain (docs/storage.md, Supported versions)"
            )
        return False
    return available


def migrate(
    database_url: str,
    folder: Path = MIGRATIONS,
    *,
    retention: RetentionSettings | None = None,
) -> list[str]:
    """Apply what is missing, then (TimescaleDB) set the retention policies to `retention`
    (the settings; their defaults when None: vitals/db/retention.py); returns the names of
    the files applied (empty when up to date)."""
    migrations = discover(folder)
    try:
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise InfrastructureError(f"database unreachable for migrations: {exc}") from exc
    try:
        with conn:
            # Session lock, released at the end or when the connection drops (a crashed
            # migrator never leaves it held).
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                applied = _apply(conn, migrations)
                if folder == MIGRATIONS and retention_policies.made_for_timescale(conn):
                    # After the files (0003 and 0007 create the first policies); a test's
                    # own folder of migrations has no such tables.
                    conn.execute(retention_policies.policy_sql(retention or RetentionSettings()))
                return applied
            finally:
                # Closing releases it too; a failed unlock must not hide the real error.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.Error as exc:  # the connection broke between files
        raise InfrastructureError(f"migrations interrupted: {exc}") from exc


def _apply(conn: psycopg.Connection, migrations: list[Migration]) -> list[str]:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               name       text PRIMARY KEY,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now()
           )"""
    )
    done: dict[str, str] = dict(
        conn.execute("SELECT name, checksum FROM schema_migrations").fetchall()
    )
    timescale = flavour_of(set(done), timescale_available(conn))
    if timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    applied: list[str] = []
    for m in plan(migrations, timescale=timescale):
        if m.name in done:
            if done[m.name] != m.checksum():
                # Not fatal: a comment fix must not stop the fleet; but say it loudly.
                log.warning("applied migration changed since", extra={"migration": m.name})
            continue
        try:
            with conn.transaction():
                conn.execute(m.sql())
                conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                    (m.name, m.checksum()),
                )
        except psycopg.Error as exc:
            raise InfrastructureError(f"migration {m.name} failed: {exc}") from exc
        log.info("migration applied", extra={"migration": m.name})
        applied.append(m.name)
    return applied

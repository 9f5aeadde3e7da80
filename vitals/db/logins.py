"""`vitals db roles`: one login role per process, each a member of exactly one group role.

Migration 0005 creates the NOLOGIN group roles and their grants (vitals_gateway,
vitals_sink, vitals_reader). A deployment runs this once per deploy, as the owner, after
`db migrate`: it creates each process's login role if missing, sets its password (so a
rotated password takes effect on the next run), grants it its one group role and revokes
the others (a login granted two roles by hand is put right). Nothing else is granted, so a
process can do what its group may and no more. Passwords come from
VITALS_DB_LOGIN_PASSWORDS (`process:password,...`); a process left out keeps its role as is.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from vitals.errors import ConfigError, InfrastructureError

GROUPS = ("vitals_gateway", "vitals_sink", "vitals_reader")

# process -> (its login role, the one group role it is granted)
LOGINS = {
    "gateway": ("vitals_gateway_login", "vitals_gateway"),
    "api": ("vitals_api_login", "vitals_reader"),
    "sink-timescale": ("vitals_sink_timescale_login", "vitals_sink"),
    "sink-alerts": ("vitals_sink_alerts_login", "vitals_sink"),
    "sink-fhir-notify": ("vitals_sink_fhir_notify_login", "vitals_sink"),
}


def parse_passwords(value: str) -> dict[str, str]:
    """`process:password,...` -> {process: password}; a clear error for anything else."""
    passwords: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        process, sep, password = entry.partition(":")
        if process not in LOGINS:
            raise ConfigError(
                f"db login passwords: unknown process {process!r}; one of {list(LOGINS)}"
            )
        if not sep or len(password) < 12:
            raise ConfigError(f"db login passwords: {process}'s password must be 12+ characters")
        passwords[process] = password
    return passwords


def ensure_logins(
    database_url: str,
    passwords: Mapping[str, str],
    logins: Mapping[str, tuple[str, str]] = LOGINS,
) -> list[str]:
    """Create or update the login roles of `passwords`' processes; returns their names.
    `logins`: process -> (login role, group role); tests give their own role names."""
    if not passwords:
        raise ConfigError("no db login passwords given (VITALS_DB_LOGIN_PASSWORDS)")
    try:
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise InfrastructureError(f"database unreachable: {exc}") from exc
    done: list[str] = []
    try:
        with conn:
            database = conn.info.dbname
            missing = set(GROUPS) - {
                r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()
            }
            if missing:
                raise ConfigError(
                    f"group roles {sorted(missing)} missing: run `vitals db migrate` first"
                )
            for process, password in passwords.items():
                login, group = logins[process]
                with conn.transaction():
                    _ensure(conn, login, group, password, database)
                done.append(login)
    except psycopg.Error as exc:
        raise InfrastructureError(f"login roles not set up: {exc}") from exc
    return done


def _ensure(conn: psycopg.Connection, login: str, group: str, password: str, db: str) -> None:
    role = sql.Identifier(login)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
    if exists is None:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    # No superuser, role or database creation, no replication, no RLS bypass: only what the
    # group is granted. The password is a literal (DDL takes no parameters), quoted by psycopg.
    conn.execute(
        sql.SQL(
            "ALTER ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            " NOBYPASSRLS PASSWORD {}"
        ).format(role, sql.Literal(password))
    )
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), role))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), role))
    for other in GROUPS:
        if other != group:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), role))

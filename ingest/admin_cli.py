"""`vitals gateways|admins issue|revoke|list` and `vitals devices register|bind|unbind|move|list`.

Registry changes from an operator's shell, straight to the database at VITALS_DATABASE_URL,
audited with the operating-system user as the actor. Gateways pick changes up within
`registry_refresh_s`. A key is printed once, when issued; only its hash is stored.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import datetime, timedelta

import asyncpg
import orjson

from ingest import registry_store
from vitals.errors import ConfigError, InfrastructureError
from vitals.settings import Settings

CONNECT_TIMEOUT_S = 10.0


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for kind, plural in (("gateway", "gateways"), ("admin", "admins")):
        group = sub.add_parser(plural, help=f"{kind} keys").add_subparsers(
            dest="action", required=True
        )
        issue = group.add_parser("issue", help=f"issue a new {kind} key (printed once)")
        issue.add_argument("principal", help=f"the {kind} id")
        issue.add_argument("--expires-days", type=float, help="the key expires after this")
        group.add_parser("revoke", help="revoke a key").add_argument("key_id")
        group.add_parser("list", help="keys, live and revoked (never the keys themselves)")

    devices = sub.add_parser("devices", help="the device registry").add_subparsers(
        dest="action", required=True
    )
    register = devices.add_parser("register", help="register a device to a patient")
    register.add_argument("device_id")
    register.add_argument("--patient", required=True)
    register.add_argument(
        "--gateway", action="append", required=True, help="a gateway allowed (repeatable)"
    )
    register.add_argument("--since", type=_moment, help="ISO 8601 with offset; default now")
    for action in ("bind", "unbind"):
        bind = devices.add_parser(action, help=f"{action} a gateway for a device")
        bind.add_argument("device_id")
        bind.add_argument("gateway_id")
    move = devices.add_parser("move", help="the device is another patient's from --since")
    move.add_argument("device_id")
    move.add_argument("--patient", required=True)
    move.add_argument("--since", type=_moment, help="ISO 8601 with offset; default now")
    devices.add_parser("list", help="devices, their current patient and gateways")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    actor = ("cli", getpass.getuser())
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise InfrastructureError(f"database unreachable: {exc}") from exc
    try:
        match (args.command, args.action):
            case ("gateways" | "admins", "issue"):
                expires = None
                if args.expires_days is not None:
                    expires = registry_store.now() + timedelta(days=args.expires_days)
                key_id, key = await registry_store.issue_key(
                    conn, _kind(args), args.principal, expires_at=expires, actor=actor
                )
                print(
                    f"key_id: {key_id}\nkey:    {key}\n(shown once; store it in the {_kind(args)})"
                )
            case ("gateways" | "admins", "revoke"):
                await registry_store.revoke_key(conn, args.key_id, actor=actor)
                print(f"revoked {args.key_id}")
            case ("gateways" | "admins", "list"):
                _print_rows(await registry_store.list_keys(conn, _kind(args)))
            case ("devices", "register"):
                await registry_store.register_device(
                    conn,
                    _identifier(args.device_id),
                    _identifier(args.patient),
                    [_identifier(g) for g in args.gateway],
                    since=args.since or registry_store.now(),
                    actor=actor,
                )
                print(f"registered {args.device_id}")
            case ("devices", "bind"):
                await registry_store.bind_gateway(
                    conn, args.device_id, _identifier(args.gateway_id), actor=actor
                )
                print(f"bound {args.gateway_id} to {args.device_id}")
            case ("devices", "unbind"):
                await registry_store.unbind_gateway(
                    conn, args.device_id, args.gateway_id, actor=actor
                )
                print(f"unbound {args.gateway_id} from {args.device_id}")
            case ("devices", "move"):
                await registry_store.move_device(
                    conn,
                    args.device_id,
                    _identifier(args.patient),
                    since=args.since or registry_store.now(),
                    actor=actor,
                )
                print(f"moved {args.device_id}")
            case ("devices", "list"):
                _print_rows(await registry_store.list_devices(conn))
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError(f"{exc}: run `vitals db migrate` first") from exc
    finally:
        await conn.close()
    return 0


def _kind(args: argparse.Namespace) -> str:
    return "gateway" if args.command == "gateways" else "admin"


def _identifier(value: str) -> str:
    from ingest.validation import identifier_problem

    problem = identifier_problem(value)
    if problem is not None:
        raise ConfigError(f"identifier {value!r} {problem}")
    return value


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give an offset (Z or +hh:mm)")
    return moment


def _print_rows(rows: list[dict[str, object]]) -> None:
    for row in rows:
        print(orjson.dumps(row, default=str).decode())

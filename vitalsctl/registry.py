"""`vitals gateways|admins|readers issue|revoke|list`, `vitals devices ...`, `vitals teams ...`.

Registry changes from an operator's shell, straight to the database at VITALS_DATABASE_URL,
audited with the operating-system user as the actor. Gateways (and the read API, for reader
keys) pick changes up within `registry_refresh_s`. A key is printed once, when issued; only
its hash is stored.
"""

from __future__ import annotations

import argparse
import getpass
import os
from datetime import datetime, timedelta
from typing import TextIO

import asyncpg
import orjson

from vitals.errors import ConfigError, InfrastructureError
from vitals.settings import Settings

CONNECT_TIMEOUT_S = 10.0
# The key commands: `vitals <plural> issue|revoke|list` for keys of `kind`.
KEY_COMMANDS = {"gateways": "gateway", "admins": "admin", "readers": "reader"}
# Who keeps an issued key, said when it is printed (only its hash is stored).
HOLDERS = {
    "gateway": "configure it on that gateway as its bearer token for POST /v1/readings",
    "admin": "give it to the operator or tool that calls the gateway's admin API",
    "reader": "give it to the reading application (the read API's bearer token)",
}


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for plural, kind in KEY_COMMANDS.items():
        group = sub.add_parser(plural, help=f"{kind} keys").add_subparsers(
            dest="action", required=True
        )
        issue = group.add_parser("issue", help=f"issue a new {kind} key (printed once)")
        issue.add_argument("principal", help=f"the {kind} id")
        issue.add_argument("--expires-days", type=float, help="the key expires after this")
        issue.add_argument(
            "--key-file",
            help="write the key to this new file (mode 600) instead of printing it: for a"
            " secret volume another process reads",
        )
        if kind == "reader":
            scope = issue.add_mutually_exclusive_group(required=True)
            scope.add_argument(
                "--team", action="append", help="a care team whose patients it reads (repeatable)"
            )
            scope.add_argument(
                "--all-patients",
                action="store_true",
                help="reads every patient: for a research or integration service only",
            )
        group.add_parser("revoke", help="revoke a key").add_argument("key_id")
        group.add_parser("list", help="keys, live and revoked (never the keys themselves)")

    devices = sub.add_parser("devices", help="the device registry").add_subparsers(
        dest="action", required=True
    )
    register = devices.add_parser("register", help="register a device to a patient")
    register.add_argument("device_id")
    register.add_argument(
        "--patient",
        required=True,
        help="the patient who wears the device from --since: uploads for it must name this"
        " patient_id (readings from before --since are rejected, outside_binding)",
    )
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
    move.add_argument(
        "--patient", required=True, help="the patient who wears the device from --since on"
    )
    move.add_argument("--since", type=_moment, help="ISO 8601 with offset; default now")
    devices.add_parser("list", help="devices, their current patient and gateways")

    teams = sub.add_parser("teams", help="care teams: who may read which patient").add_subparsers(
        dest="action", required=True
    )
    teams.add_parser("add", help="add a care team").add_argument("team_id")
    for action in ("assign", "unassign"):
        change = teams.add_parser(action, help=f"{action} patients to a care team")
        change.add_argument("team_id")
        change.add_argument("patients", nargs="+", metavar="PATIENT")
    teams.add_parser("list", help="care teams and their patients")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from frontdoor import registry_store  # here: building the parser imports no runtime

    actor = ("cli", getpass.getuser())
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise InfrastructureError(f"database unreachable: {exc}") from exc
    try:
        match (args.command, args.action):
            case (command, "issue") if command in KEY_COMMANDS:
                expires = None
                if args.expires_days is not None:
                    expires = _expiry(args.expires_days)
                # The file first: a key must not be issued that could not be handed over.
                key_file = _open_key_file(args.key_file) if args.key_file else None
                all_patients = bool(getattr(args, "all_patients", False))
                key_id, key = await registry_store.issue_key(
                    conn,
                    _kind(args),
                    args.principal,
                    expires_at=expires,
                    actor=actor,
                    teams=list(getattr(args, "team", None) or ()),
                    all_patients=all_patients,
                )
                if all_patients:
                    print("scope:  all patients (audited as such)")
                if key_file is not None:
                    with key_file:
                        key_file.write(key + "\n")
                    print(f"key_id: {key_id}\nkey:    written to {args.key_file}")
                else:
                    print(f"key_id: {key_id}\nkey:    {key}\n(shown once; {HOLDERS[_kind(args)]})")
            case (command, "revoke") if command in KEY_COMMANDS:
                await registry_store.revoke_key(conn, args.key_id, actor=actor, kind=_kind(args))
                print(f"revoked {args.key_id}")
            case (command, "list") if command in KEY_COMMANDS:
                _print_rows(await registry_store.list_keys(conn, _kind(args)))
            case ("devices", "register"):
                await registry_store.register_device(
                    conn,
                    args.device_id,
                    args.patient,
                    args.gateway,
                    since=args.since or registry_store.now(),
                    actor=actor,
                )
                print(f"registered {args.device_id}")
            case ("devices", "bind"):
                await registry_store.bind_gateway(
                    conn, args.device_id, args.gateway_id, actor=actor
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
                    args.patient,
                    since=args.since or registry_store.now(),
                    actor=actor,
                )
                print(f"moved {args.device_id}")
            case ("devices", "list"):
                _print_rows(await registry_store.list_devices(conn))
            case ("teams", "add"):
                await registry_store.add_team(conn, args.team_id, actor=actor)
                print(f"added {args.team_id}")
            case ("teams", "assign" | "unassign"):
                patients = list(args.patients)
                assign = args.action == "assign"
                changed = await registry_store.assign_patients(
                    conn, args.team_id, patients, assign=assign, actor=actor
                )
                way = "to" if assign else "from"
                print(f"{args.action}ed {changed} patient(s) {way} {args.team_id}")
            case ("teams", "list"):
                _print_rows(await registry_store.list_teams(conn))
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError(f"{exc}: run `vitals db migrate` first") from exc
    finally:
        await conn.close()
    return 0


def _kind(args: argparse.Namespace) -> str:
    return KEY_COMMANDS[args.command]


def _open_key_file(path: str) -> TextIO:
    """`path` emptied for a key, readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    except OSError as exc:
        raise ConfigError(f"key file: {exc}") from exc
    return os.fdopen(fd, "w", encoding="utf-8")


def _expiry(days: float) -> datetime:
    """Now + `days`; a number of days past the calendar is refused like a far date."""
    from frontdoor import registry_store

    try:
        return registry_store.now() + timedelta(days=days)
    except OverflowError:
        raise ConfigError(f"--expires-days {days:g} is beyond the accepted range") from None


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give an offset (Z or +hh:mm)")
    return moment


def _print_rows(rows: list[dict[str, object]]) -> None:
    for row in rows:
        print(orjson.dumps(row, default=str).decode())

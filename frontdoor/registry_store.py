"""The registry in PostgreSQL: keys, devices and bindings, care teams. Used by the CLI and
the admin API.

Every change writes its audit record in the same transaction, so a change and its record
exist together or not at all. Keys are returned in clear exactly once, by `issue_key`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from frontdoor import keys, metrics
from frontdoor.errors import Malformed, NotFound, RegistryConflict
from frontdoor.registry import Binding, Credential, Device, Snapshot
from vitals import bounds

log = logging.getLogger(__name__)

KINDS = ("gateway", "admin", "reader")


class _Unloadable(Exception):
    """A stored time outside the accepted range (vitals/bounds.py): `-infinity`,
    `infinity`, a NULL where one is needed, year 1. Only SQL behind the API's back writes
    one; the row is skipped so that the rest of the registry still loads."""


def _ms(moment: datetime | None) -> int:
    # asyncpg reads +-infinity as datetime.max and datetime.min: outside the range too.
    if moment is None or moment.tzinfo is None or bounds.time_problem(moment) is not None:
        raise _Unloadable
    return bounds.epoch_ms(moment)


def _optional_ms(moment: datetime | None) -> int | None:
    return None if moment is None else _ms(moment)


def _skipped(table: str, **ids: str) -> None:
    """Count and log a row left out: by device or key id, never the patient's."""
    metrics.REGISTRY_ROWS_SKIPPED.labels(table).inc()
    log.warning(
        "registry row skipped: a time in it is outside the accepted range",
        extra={"table": table, **ids},
    )


def checked_time(name: str, moment: datetime) -> datetime:
    """`moment` if it is in the accepted range; else Malformed (400), before any write."""
    problem = bounds.time_problem(moment)
    if problem is not None:
        raise Malformed("bad_time", f"{name} {problem}")
    return moment


def checked_id(name: str, value: str) -> str:
    """`value` if it follows the identifier grammar; else Malformed (400)."""
    problem = bounds.identifier_problem(value)
    if problem is not None:
        raise Malformed("bad_identifier", f"{name} {value[:40]!r} {problem}")
    return value


async def load(conn: asyncpg.Connection) -> Snapshot:
    """The gateway's registry (its keys, admin tokens, devices) as one consistent snapshot
    (one REPEATABLE READ transaction). Reader keys stay out: the gateway never takes them."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        key_rows = await conn.fetch(
            "SELECT key_id, kind, principal, key_sha256, expires_at, revoked_at FROM api_keys"
            " WHERE kind IN ('gateway', 'admin')"
        )
        binding_rows = await conn.fetch(
            "SELECT device_id, patient_id, valid_from, valid_to FROM device_patients"
        )
        gateway_rows = await conn.fetch("SELECT device_id, gateway_id FROM device_gateways")
        device_rows = await conn.fetch("SELECT device_id FROM devices")
    credentials = _credentials(key_rows)
    bindings: dict[str, list[Binding]] = {r["device_id"]: [] for r in device_rows}
    gateways: dict[str, set[str]] = {r["device_id"]: set() for r in device_rows}
    for r in binding_rows:
        try:
            binding = Binding(r["patient_id"], _ms(r["valid_from"]), _optional_ms(r["valid_to"]))
        except _Unloadable:
            # Without this binding the device is not this patient's: uploads are refused
            # (403), never attributed by a guessed time.
            _skipped("device_patients", device_id=r["device_id"])
            continue
        bindings[r["device_id"]].append(binding)
    for r in gateway_rows:
        gateways[r["device_id"]].add(r["gateway_id"])
    devices = {
        device_id: Device(tuple(bindings[device_id]), frozenset(gateways[device_id]))
        for device_id in bindings
    }
    return Snapshot(credentials, devices, loaded=True)


async def load_readers(conn: asyncpg.Connection) -> Snapshot:
    """The read API's registry: reader keys with their scope, through the views
    `reader_keys` (0008) and `reader_key_scopes` (0010), and the care teams' patients
    (0010), in one consistent snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(
            "SELECT key_id, 'reader' AS kind, principal, key_sha256, expires_at, revoked_at,"
            " all_patients, teams FROM reader_keys JOIN reader_key_scopes USING (key_id)"
        )
        assigned = await conn.fetch("SELECT team_id, patient_id FROM care_team_patients")
    teams: dict[str, set[str]] = {}
    for r in assigned:
        teams.setdefault(r["patient_id"], set()).add(r["team_id"])
    care_teams = {patient: frozenset(ids) for patient, ids in teams.items()}
    return Snapshot(_credentials(rows), care_teams=care_teams, loaded=True)


def _credentials(rows: Iterable[asyncpg.Record]) -> dict[bytes, Credential]:
    """Keys by digest; a key whose expiry cannot be read is left out (it opens nothing)."""
    credentials = {}
    for r in rows:
        try:
            expires_ms = _optional_ms(r["expires_at"])
        except _Unloadable:
            _skipped("api_keys", key_id=r["key_id"])
            continue
        credentials[bytes(r["key_sha256"])] = Credential(
            r["key_id"],
            r["kind"],
            r["principal"],
            expires_ms,
            r["revoked_at"] is not None,
            frozenset(r.get("teams") or ()),
            bool(r.get("all_patients")),
        )
    return credentials


async def _audit(
    conn: asyncpg.Connection, actor_kind: str, actor: str, action: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (at, actor_kind, actor, action, outcome, detail)"
        " VALUES (now(), $1, $2, $3, 'done', $4::jsonb)",
        actor_kind,
        actor,
        action,
        orjson.dumps(detail).decode(),
    )


async def issue_key(
    conn: asyncpg.Connection,
    kind: str,
    principal: str,
    *,
    expires_at: datetime | None,
    actor: tuple[str, str],
    teams: Iterable[str] = (),
    all_patients: bool = False,
) -> tuple[str, str]:
    """(key_id, key); the principal's other keys stay valid (rotation: issue, deploy, revoke).

    A reader key is scoped: to care `teams` (which must exist), or to `all_patients`,
    exactly one of the two; the audit record says which."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    checked_id("the name", principal)
    if expires_at is not None:
        checked_time("the expiry", expires_at)
    team_ids = sorted(set(teams))
    for team in team_ids:
        checked_id("the team id", team)
    if kind == "reader" and bool(team_ids) == all_patients:
        raise RegistryConflict(
            "bad_scope", "a reader key is issued for one or more teams, or for all patients"
        )
    if kind != "reader" and (team_ids or all_patients):
        raise RegistryConflict("bad_scope", "only reader keys have a patient scope")
    key_id, key = keys.new_key()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO api_keys (key_id, kind, principal, key_sha256, expires_at, all_patients)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            key_id,
            kind,
            principal,
            keys.digest(key),
            expires_at,
            all_patients,
        )
        await _require_teams(conn, team_ids)
        await conn.executemany(
            "INSERT INTO reader_key_teams (key_id, team_id) VALUES ($1, $2)",
            [(key_id, t) for t in team_ids],
        )
        detail: dict[str, Any] = {"key_id": key_id, "principal": principal}
        if kind == "reader":
            detail |= {"teams": team_ids, "all_patients": all_patients}
        await _audit(conn, *actor, f"{kind}_key_issued", detail)
    return key_id, key


async def revoke_key(
    conn: asyncpg.Connection, key_id: str, *, actor: tuple[str, str], kind: str | None = None
) -> None:
    """Revoke a live key; with `kind`, only a key of that kind (`vitals readers revoke`
    must not revoke a gateway's key by a mistyped id)."""
    async with conn.transaction():
        done = await conn.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL"
            " AND kind = coalesce($2, kind) RETURNING kind",
            key_id,
            kind,
        )
        if done is None:
            of_kind = f" of kind {kind}" if kind else ""
            raise NotFound("no_such_key", f"no live key {key_id}{of_kind}")
        await _audit(conn, *actor, f"{done}_key_revoked", {"key_id": key_id})


async def list_keys(conn: asyncpg.Connection, kind: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT key_id, principal, created_at, expires_at, revoked_at FROM api_keys"
        " WHERE kind = $1 ORDER BY principal, created_at",
        kind,
    )
    return [dict(r) for r in rows]


async def register_device(
    conn: asyncpg.Connection,
    device_id: str,
    patient_id: str,
    gateways: Iterable[str],
    *,
    since: datetime,
    actor: tuple[str, str],
) -> None:
    # Everything checked before the transaction: a change is refused whole (400) or made.
    checked_id("device_id", device_id)
    checked_id("patient_id", patient_id)
    gateway_ids = sorted({checked_id("gateway_id", g) for g in gateways})
    checked_time("since", since)
    async with conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO devices (device_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1",
            device_id,
        )
        if created is None:
            raise RegistryConflict(
                "device_exists", "the device is registered already; bind or move it"
            )
        await conn.execute(
            "INSERT INTO device_patients (device_id, patient_id, valid_from) VALUES ($1, $2, $3)",
            device_id,
            patient_id,
            since,
        )
        await conn.executemany(
            "INSERT INTO device_gateways (device_id, gateway_id) VALUES ($1, $2)",
            [(device_id, g) for g in gateway_ids],
        )
        # The audit trail names the device but not the patient: who wears what is
        # registry data, readable there by those allowed to.
        await _audit(
            conn, *actor, "device_registered", {"device_id": device_id, "gateways": gateway_ids}
        )


async def bind_gateway(
    conn: asyncpg.Connection, device_id: str, gateway_id: str, *, actor: tuple[str, str]
) -> None:
    checked_id("gateway_id", gateway_id)
    async with conn.transaction():
        await _require_device(conn, device_id)
        await conn.execute(
            "INSERT INTO device_gateways (device_id, gateway_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            device_id,
            gateway_id,
        )
        await _audit(
            conn, *actor, "gateway_bound", {"device_id": device_id, "gateway_id": gateway_id}
        )


async def unbind_gateway(
    conn: asyncpg.Connection, device_id: str, gateway_id: str, *, actor: tuple[str, str]
) -> None:
    async with conn.transaction():
        await _require_device(conn, device_id)
        await conn.execute(
            "DELETE FROM device_gateways WHERE device_id = $1 AND gateway_id = $2",
            device_id,
            gateway_id,
        )
        await _audit(
            conn, *actor, "gateway_unbound", {"device_id": device_id, "gateway_id": gateway_id}
        )


async def move_device(
    conn: asyncpg.Connection,
    device_id: str,
    patient_id: str,
    *,
    since: datetime,
    actor: tuple[str, str],
) -> None:
    """The device is `patient_id`'s from `since`; the binding before it ends there."""
    checked_id("patient_id", patient_id)
    checked_time("since", since)
    async with conn.transaction():
        await _require_device(conn, device_id)
        current = await conn.fetchrow(
            "SELECT patient_id, valid_from FROM device_patients"
            " WHERE device_id = $1 AND valid_to IS NULL FOR UPDATE",
            device_id,
        )
        if current is not None:
            if since <= current["valid_from"]:
                raise RegistryConflict(
                    "move_before_binding",
                    f"the current binding starts at {current['valid_from'].isoformat()}; "
                    "a move must start after it",
                )
            await conn.execute(
                "UPDATE device_patients SET valid_to = $2"
                " WHERE device_id = $1 AND valid_to IS NULL",
                device_id,
                since,
            )
        await conn.execute(
            "INSERT INTO device_patients (device_id, patient_id, valid_from) VALUES ($1, $2, $3)",
            device_id,
            patient_id,
            since,
        )
        await _audit(
            conn, *actor, "device_moved", {"device_id": device_id, "since": since.isoformat()}
        )


async def list_devices(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT d.device_id,
                  (SELECT patient_id FROM device_patients p
                    WHERE p.device_id = d.device_id AND p.valid_to IS NULL) AS patient_id,
                  coalesce((SELECT array_agg(gateway_id ORDER BY gateway_id) FROM device_gateways g
                    WHERE g.device_id = d.device_id), '{}') AS gateways
             FROM devices d ORDER BY d.device_id"""
    )
    return [dict(r) for r in rows]


async def add_team(conn: asyncpg.Connection, team_id: str, *, actor: tuple[str, str]) -> None:
    checked_id("the team id", team_id)
    async with conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO care_teams (team_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1",
            team_id,
        )
        if created is None:
            raise RegistryConflict("team_exists", "the care team exists already")
        await _audit(conn, *actor, "team_added", {"team_id": team_id})


async def assign_patients(
    conn: asyncpg.Connection,
    team_id: str,
    patient_ids: Iterable[str],
    *,
    assign: bool,
    actor: tuple[str, str],
) -> int:
    """Assign (or with assign=False, unassign) patients to a team; how many changed.
    Readers of the team's keys see the change within one reload of the read API."""
    checked_id("the team id", team_id)
    patients = sorted(set(patient_ids))
    for patient in patients:
        checked_id("a patient id", patient)
    async with conn.transaction():
        await _require_teams(conn, [team_id])
        if assign:
            changed = await conn.fetch(
                "INSERT INTO care_team_patients (team_id, patient_id)"
                " SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING 1",
                team_id,
                patients,
            )
        else:
            changed = await conn.fetch(
                "DELETE FROM care_team_patients WHERE team_id = $1"
                " AND patient_id = ANY($2::text[]) RETURNING 1",
                team_id,
                patients,
            )
        # Counts, never the patients: the audit trail names no patient.
        action = "patients_assigned" if assign else "patients_unassigned"
        await _audit(conn, *actor, action, {"team_id": team_id, "patients": len(changed)})
    return len(changed)


async def list_teams(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT t.team_id, t.created_at,
                  coalesce((SELECT array_agg(patient_id ORDER BY patient_id)
                              FROM care_team_patients p WHERE p.team_id = t.team_id), '{}')
                    AS patients
             FROM care_teams t ORDER BY t.team_id"""
    )
    return [dict(r) for r in rows]


async def _require_teams(conn: asyncpg.Connection, team_ids: list[str]) -> None:
    known = await conn.fetch(
        "SELECT team_id FROM care_teams WHERE team_id = ANY($1::text[])", team_ids
    )
    missing = sorted(set(team_ids) - {r["team_id"] for r in known})
    if missing:
        raise NotFound("no_such_team", f"no care team {', '.join(missing)}")


async def _require_device(conn: asyncpg.Connection, device_id: str) -> None:
    if await conn.fetchval("SELECT 1 FROM devices WHERE device_id = $1", device_id) is None:
        raise NotFound("no_such_device", "the device is not registered")


def now() -> datetime:
    return datetime.now(UTC)

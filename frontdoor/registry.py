"""Who may upload what, and who may read whom: keys, devices and care teams, as one snapshot.

A Snapshot is immutable and replaced whole on each refresh (frontdoor/refresher.py), so a
request sees one consistent registry without locks. Everything here is pure: the checks
take the snapshot and the upload and answer or raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from frontdoor.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Credential:
    key_id: str
    kind: str  # "gateway", "admin" or "reader" (the read API's)
    principal: str  # the gateway id, the admin's or the reader's name
    expires_ms: int | None = None
    revoked: bool = False
    # A reader key's scope: the care teams whose patients it reads, or every patient.
    teams: frozenset[str] = frozenset()
    all_patients: bool = False


@dataclass(frozen=True, slots=True)
class Binding:
    """The device was worn by `patient_id` from `from_ms` (inclusive) to `to_ms` (exclusive)."""

    patient_id: str
    from_ms: int
    to_ms: int | None = None

    def covers(self, t_ms: int) -> bool:
        return self.from_ms <= t_ms and (self.to_ms is None or t_ms < self.to_ms)


@dataclass(frozen=True, slots=True)
class Device:
    bindings: tuple[Binding, ...]
    gateways: frozenset[str]

    @property
    def current_patient(self) -> str | None:
        open_ = [b for b in self.bindings if b.to_ms is None]
        return open_[0].patient_id if open_ else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    credentials: Mapping[bytes, Credential] = field(default_factory=dict)  # by key digest
    devices: Mapping[str, Device] = field(default_factory=dict)
    care_teams: Mapping[str, frozenset[str]] = field(default_factory=dict)  # patient -> teams
    loaded: bool = False  # False until the first load from the database succeeded


EMPTY = Snapshot()


def outside_binding(
    snapshot: Snapshot,
    *,
    gateway_id: str,
    device_id: str,
    patient_id: str,
    times: Sequence[int],
) -> list[int]:
    """Positions in `times` (the readings' event times, ms) taken before or after the
    device was this patient's.

    Raises Forbidden (the whole upload) for an unregistered device, a gateway not bound to
    it, or a patient the device has never been bound to. Readings of a patient the device
    was moved away from are still taken for the time it was theirs: a gateway that was
    offline across the move uploads its backlog under the old patient, and each reading
    keeps the patient whose binding its time falls in.
    """
    device = snapshot.devices.get(device_id)
    if device is None:
        raise Forbidden("device_not_registered", "this device is not registered")
    if gateway_id not in device.gateways:
        raise Forbidden("gateway_not_bound", "this gateway may not upload for this device")
    spans = [b for b in device.bindings if b.patient_id == patient_id]
    if not spans:
        raise Forbidden("patient_not_bound", "this device is not bound to this patient")
    return [i for i, t in enumerate(times) if not any(b.covers(t) for b in spans)]


def may_read(snapshot: Snapshot, reader: Credential, patient_id: str) -> bool:
    """A reader key reads a patient of one of its care teams; an all-patients key, any."""
    if reader.all_patients:
        return True
    return not reader.teams.isdisjoint(snapshot.care_teams.get(patient_id, ()))


def with_env_credentials(
    snapshot: Snapshot, env: Mapping[str, str], kind: str = "gateway"
) -> Snapshot:
    """The snapshot plus tokens from the environment (token -> principal) of `kind`:
    VITALS_GATEWAY_CREDENTIALS for the gateway, VITALS_READER_CREDENTIALS for the read API.
    Static reader tokens read every patient: they are for local runs and tests, and a
    deployment leaves them empty (docs/security.md)."""
    from frontdoor.keys import digest

    merged = {
        digest(token): Credential(
            f"env:{principal}", kind, principal, all_patients=kind == "reader"
        )
        for token, principal in env.items()
    }
    merged.update(snapshot.credentials)
    return Snapshot(merged, snapshot.devices, snapshot.care_teams, snapshot.loaded)

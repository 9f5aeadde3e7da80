"""Device silence: no upload from a patient's device for `silence_after_ms` of wall clock.

Judged on arrival time (Upload.received, set by the gateway when the upload came in) and
checked by the loop's periodic tick, so it fires while nothing arrives. The episode starts
at the device's last arrival and is "opened" at last arrival + silence_after (both taken
from the data, so the alert id is deterministic); it resolves when the device uploads again.

Silence is wall-clock based and ticks are not replayed: the last arrivals and open
episodes are part of each patient's checkpoint (checkpoint.py), so a device silent for
12 hours is still silent after a restart and is not opened again. Without a checkpoint
(full replay), a restart opens it again with the same deterministic alert id, and the
alerts sink dedupes on (alert_id, state).
"""

from __future__ import annotations

from vitals.contract import Detection, alert_id

RULE = "device_silence"
SEVERITY = "low"


class DeviceSilence:
    """Last arrival and open silence episode per (patient, device) of one partition."""

    __slots__ = ("after_ms", "_last", "_open")

    def __init__(self, after_ms: int) -> None:
        self.after_ms = after_ms
        self._last: dict[tuple[str, str], int] = {}
        self._open: dict[tuple[str, str], int] = {}  # -> episode start (last arrival)

    def __len__(self) -> int:
        return len(self._last)

    def arrived(self, patient_id: str, device_id: str, at: int, now: int) -> Detection | None:
        """An upload from the device arrived at `at`; resolves its silence if open."""
        key = (patient_id, device_id)
        self._last[key] = max(at, self._last.get(key, at))
        start = self._open.pop(key, None)
        if start is None:
            return None
        return self._detection(key, "resolved", start, max(at, start + self.after_ms), now)

    def by_patient(self) -> dict[str, dict[str, tuple[int, int | None]]]:
        """Per patient, per device: last arrival and the open episode's start (checkpoints)."""
        found: dict[str, dict[str, tuple[int, int | None]]] = {}
        for (patient_id, device_id), last in self._last.items():
            start = self._open.get((patient_id, device_id))
            found.setdefault(patient_id, {})[device_id] = (last, start)
        return found

    def restore(self, patient_id: str, devices: dict[str, tuple[int, int | None]]) -> None:
        for device_id, (last, start) in devices.items():
            self._last[(patient_id, device_id)] = last
            if start is not None:
                self._open[(patient_id, device_id)] = start

    def check(self, clock: int, now: int) -> list[Detection]:
        """Open an episode for every device silent for `after_ms` at `clock`.

        `clock` is the wall clock when the partition is caught up; a lagging processor
        passes the arrival time it has read up to, so queued uploads do not look silent.
        """
        opened = []
        for key, last in self._last.items():
            if key not in self._open and clock - last >= self.after_ms:
                self._open[key] = last
                opened.append(self._detection(key, "opened", last, last + self.after_ms, now))
        return opened

    def _detection(
        self, key: tuple[str, str], state: str, start: int, at: int, now: int
    ) -> Detection:
        patient_id, device_id = key
        return Detection(
            alert_id=alert_id(patient_id, RULE, start),
            patient_id=patient_id,
            rule=RULE,
            state=state,
            severity=SEVERITY,
            episode_start=start,
            at=at,
            detected=now,
            retrospective=False,
            device_id=device_id,
            detail=f"no upload from the device for >= {self.after_ms / 1000:g} s",
        )

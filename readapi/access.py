"""Who reads whom, and on record: the guard around every read of a patient's data.

Before a route reads, `Access.reading` checks the reader's request rate and rows-per-minute
budget (429, not recorded: a flood of refusals must not flood the audit either), that the
read audit can take one more record (else 503: no read is served off the record), and that
the patient is in the reader key's care teams (else 404: a reader outside them cannot tell
a patient they may not read from one that does not exist). From the scope check on, every
outcome is recorded in the read audit with the rows returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from frontdoor.errors import AuditUnavailable, GatewayError, NotFound, RateLimited
from frontdoor.ratelimit import TokenBuckets, retry_after_s
from frontdoor.registry import Credential, Snapshot, may_read
from readapi.audit import ReadAudit


@dataclass(slots=True)
class Read:
    """What a route read: set `rows` to the rows (or buckets, scores) it returns."""

    rows: int = 0


@dataclass(slots=True)
class Listing:
    """A read across patients: `patients` it may cover (None: every patient); set `rows`
    to the rows returned per patient."""

    patients: list[str] | None
    rows: dict[str, int] = field(default_factory=dict)


class Access:
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        audit: ReadAudit,
        *,
        requests: TokenBuckets | None,
        rows: TokenBuckets | None,
        retry_after_s: int,
    ) -> None:
        self._snapshot = snapshot
        self._audit = audit
        self._requests = requests
        self._rows = rows
        self._retry_after_s = retry_after_s

    @asynccontextmanager
    async def reading(
        self,
        reader: Credential,
        route: str,
        patient_id: str,
        *,
        missing: Callable[[], NotFound] = lambda: NotFound(
            "no_such_patient", "no patient with this id in this reader's care teams"
        ),
    ) -> AsyncIterator[Read]:
        """`missing`: the 404 to answer outside the reader's teams (an alert's route says
        the alert, so that an alert of another team's patient looks like no alert at all)."""
        self._before_reading(reader)
        read = Read()
        outcome, status = "ok", 200
        try:
            if not may_read(self._snapshot(), reader, patient_id):
                raise missing()
            yield read
        except GatewayError as exc:
            outcome, status = exc.code, exc.status
            raise
        except BaseException:
            outcome, status = "error", 500
            raise
        finally:
            self._audit.read(
                reader, route, patient_id, outcome=outcome, status=status, rows=read.rows
            )
            if self._rows is not None and read.rows:
                self._rows.charge(reader.key_id, read.rows)

    @asynccontextmanager
    async def listing(self, reader: Credential, route: str) -> AsyncIterator[Listing]:
        """A read across the reader's patients (the open alerts, the board): limits first;
        afterwards one audit record per patient whose data the answer holds."""
        self._before_reading(reader)
        listing = Listing(self.patients(reader))
        try:
            yield listing
        finally:
            for patient_id, rows in listing.rows.items():
                self._audit.read(reader, route, patient_id, outcome="ok", status=200, rows=rows)
            if self._rows is not None and listing.rows:
                self._rows.charge(reader.key_id, sum(listing.rows.values()))

    def delivered(self, reader: Credential, route: str, patient_id: str) -> bool:
        """A change of one patient's data sent on a stream, on record; False when the audit
        cannot take the record (the stream is then closed: nothing is sent off the record)."""
        if self._audit.full():
            return False
        self._audit.read(reader, route, patient_id, outcome="ok", status=200, rows=1)
        return True

    def patients(self, reader: Credential) -> list[str] | None:
        """The patients of the reader's care teams, sorted; None for an all-patients key."""
        if reader.all_patients:
            return None
        teams = self._snapshot().care_teams
        return sorted(p for p, of in teams.items() if not reader.teams.isdisjoint(of))

    def _before_reading(self, reader: Credential) -> None:
        self._within_limits(reader)
        if self._audit.full():
            raise AuditUnavailable(
                "audit_unavailable",
                "reads cannot be recorded right now (the read audit is not being written)",
                retry_after_s=self._retry_after_s,
            )

    def _within_limits(self, reader: Credential) -> None:
        if self._requests is not None:
            wait_s = self._requests.take(reader.key_id)
            if wait_s > 0:
                raise RateLimited(
                    "rate_limited",
                    f"more than {self._requests.rate_per_s:g} reads a second from this reader",
                    retry_after_s=retry_after_s(wait_s),
                )
        if self._rows is not None:
            # Rows are charged after the read (its size is known only then), so a reader
            # may overdraw once; it then waits until the budget is back above zero.
            wait_s = self._rows.take(reader.key_id, cost=0.0)
            if wait_s > 0:
                per_minute = round(self._rows.rate_per_s * 60)
                raise RateLimited(
                    "row_limit",
                    f"more than {per_minute} rows a minute read by this reader",
                    retry_after_s=retry_after_s(wait_s),
                )

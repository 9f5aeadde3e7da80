"""PostgreSQL advisory lock keys shared by more than one process (any constant bigint)."""

from __future__ import annotations

# Human states of alerts (0014): the read API takes it shared around an acknowledgement or
# outcome, the alerts sink exclusive around deciding escalations, each in its transaction,
# so an escalation decided in the instant of an acknowledgement waits for it and sees it.
LIFECYCLE = int.from_bytes(b"vitalsLc", "big")
# The escalation lease: held for its session by the one alerts sink that escalates.
ESCALATION_LEASE = int.from_bytes(b"vitalsEs", "big")

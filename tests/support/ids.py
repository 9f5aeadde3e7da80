"""Names of the tests' own: every test makes ids no other test uses (the database is shared)."""

from __future__ import annotations

import uuid


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def patient() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"

"""Bearer credentials: which gateway (or admin) is calling.

Keys are looked up by their SHA-256 digest in the registry snapshot held in memory, so a
request never waits for the database, and the lookup's timing depends on the digest, not
on how much of a guessed key is right. Expiry is checked against the clock on every
request; revocation takes effect at the next registry refresh.
"""

from __future__ import annotations

from collections.abc import Callable

from frontdoor.errors import Unauthenticated
from frontdoor.keys import digest
from frontdoor.registry import Credential, Snapshot
from vitals import contract


class Authenticator:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        """`snapshot`: the current registry (keys from the database and the environment)."""
        self._snapshot = snapshot

    def gateway_for(self, authorization: str | None) -> str:
        """The gateway id behind an Authorization header, or Unauthenticated."""
        return self._credential(authorization, "gateway").principal

    def admin_for(self, authorization: str | None) -> str:
        """The admin behind an Authorization header; gateway keys never pass here."""
        return self._credential(authorization, "admin").principal

    def reader_for(self, authorization: str | None) -> Credential:
        """The reader key (read API) behind an Authorization header, with its patient
        scope; gateway keys never pass."""
        return self._credential(authorization, "reader")

    def _credential(self, authorization: str | None, kind: str) -> Credential:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                "missing_credential",
                f"send Authorization: Bearer <{kind} key>",
                token_given=False,
            )
        found = self._snapshot().credentials.get(digest(token))
        if found is None or found.kind != kind:
            raise Unauthenticated(
                "invalid_credential",
                f"the bearer token is not a valid {kind} key",
                token_given=True,
            )
        if found.revoked:
            raise Unauthenticated(
                "revoked_credential", f"key {found.key_id} was revoked", token_given=True
            )
        if found.expires_ms is not None and contract.now_ms() >= found.expires_ms:
            raise Unauthenticated(
                "expired_credential", f"key {found.key_id} has expired", token_given=True
            )
        return found

"""API keys: how they look, how they are made, and the only form in which they are stored.

A key is `vk_<key_id>_<secret>`: the key_id (8 hex characters) is public and names the key
in listings, audit records and `revoke`; the secret is 32 random bytes. Only the SHA-256
of the whole key is stored. A fast hash is right here, unlike for passwords: with 256 bits
of randomness there is nothing to guess, and the gateway can look a key up by its digest
in memory without a slow key-derivation function on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "vk_"
_SHAPE = re.compile(r"^vk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")


def new_key() -> tuple[str, str]:
    """(key_id, key). The key is shown once, to whoever issues it, and never stored."""
    key_id = secrets.token_hex(4)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The public key_id of a well-formed key, else None."""
    match = _SHAPE.match(key)
    return match.group(1) if match else None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()

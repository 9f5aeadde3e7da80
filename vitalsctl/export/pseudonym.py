"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a secret key.

A plain hash of a patient id could be reversed by hashing every plausible id (ids are short
and structured); with a secret key it cannot, without the key. The same key gives the same
pseudonym in every export (studies can be joined); another key gives unrelated ones. A
domain prefix keeps a patient and a device with the same id apart.
"""

from __future__ import annotations

import hashlib
import hmac

from vitals.errors import ConfigError

MIN_KEY_CHARS = 16
PSEUDONYM_HEX = 32  # 128 bits: no collisions at any cohort size


class Pseudonymiser:
    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                "VITALS_EXPORT_PSEUDONYM_KEY is required for an export: a secret of at least"
                f" {MIN_KEY_CHARS} characters (the same key gives the same pseudonyms)"
            )
        self._key = key.encode()
        self._memo: dict[tuple[str, str], str] = {}  # rows of one patient arrive together

    def of(self, domain: str, identifier: str) -> str:
        known = self._memo.get((domain, identifier))
        if known is None:
            mac = hmac.new(self._key, f"{domain}\x00{identifier}".encode(), hashlib.sha256)
            known = mac.hexdigest()[:PSEUDONYM_HEX]
            if len(self._memo) > 100_000:  # bounded: memory stays flat on huge cohorts
                self._memo.clear()
            self._memo[(domain, identifier)] = known
        return known

    def patient(self, patient_id: str) -> str:
        return self.of("patient", patient_id)

    def device(self, device_id: str) -> str:
        return self.of("device", device_id)

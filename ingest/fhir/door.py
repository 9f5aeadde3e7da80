"""The FHIR Bundle as a door of the one intake path (ingest/intake.py).

validate: the Bundle translated (translate.py), its reading items checked by the code that
checks /v1/readings (validation.check_items: units, conversion, ranges, clock skew,
repeats). settle: after the device registry, the answer: a batch-response or
transaction-response Bundle with one entry per posted entry, in order. An entry is taken
whole or refused whole (a blood pressure panel is two readings: both or neither). A
batch takes its valid entries; a transaction with any refused entry is refused whole
(TransactionRefused: nothing is produced).

One door per request: it keeps the translation, so the route can answer a batch whose
every entry was refused with the batch-response that says why, entry by entry.
"""

from __future__ import annotations

from typing import Any

import orjson

from frontdoor.errors import NothingValid, Rejection, TransactionRefused
from ingest.fhir.translate import Translation, translate
from ingest.validation import Batch, check_items
from vitals import fhir

# Rejection code -> the entry's HTTP status. Not in here: 400 (the entry is not what this
# endpoint takes: its shape, resource type, codes, references).
ENTRY_STATUS = {
    "outside_binding": "403 Forbidden",
    "out_of_range": "422 Unprocessable Entity",
    "future_timestamp": "422 Unprocessable Entity",
    "time_out_of_range": "422 Unprocessable Entity",
    "conflicting_value": "409 Conflict",
}
BAD_REQUEST = "400 Bad Request"
# Where in the entry's resource a reading's rejection points.
_WHERE = {
    "bad_value": "valueQuantity.value",
    "out_of_range": "valueQuantity.value",
    "unknown_unit": "valueQuantity.code",
    "bad_timestamp": "effective",
    "timestamp_without_offset": "effective",
    "future_timestamp": "effective",
    "time_out_of_range": "effective",
}


class BundleDoor:
    media_types: tuple[str, ...] = (fhir.MEDIA_TYPE, "application/json")

    def __init__(self) -> None:
        self.translation: Translation | None = None

    def validate(
        self, raw: bytes, *, now_ms: int, max_future_skew_s: float, max_readings: int
    ) -> Batch:
        translation = self.translation = translate(raw, max_entries=max_readings)
        items, origins = translation.items()
        latest_ms = now_ms + int(max_future_skew_s * 1000)
        rows, item_rejections = check_items(items, latest_ms)
        rejected = translation.refusals() + [
            Rejection(origins[r.index], r.code, r.detail) for r in item_rejections
        ]
        rejected_items = {r.index for r in item_rejections}
        sources = tuple(o for i, o in enumerate(origins) if i not in rejected_items)
        batch = Batch(
            translation.device_id or "",
            translation.patient_id or "",
            tuple(rows),
            tuple(sorted(rejected, key=lambda r: r.index)),
            sources,
        )
        return self._whole_entries(batch)

    def settle(self, upload_id: str, batch: Batch) -> tuple[Batch, bytes]:
        batch = self._whole_entries(batch)
        return batch, orjson.dumps(self.response(batch.rejected, upload_id=upload_id))

    def _whole_entries(self, batch: Batch) -> Batch:
        """Without the rows of an entry that had any refused: refused whole. A transaction
        with a refusal, and an upload left without rows, are refused here."""
        assert self.translation is not None
        refused = {r.index for r in batch.rejected}
        if refused and self.translation.bundle_type == "transaction":
            raise TransactionRefused(
                "transaction_refused",
                "a transaction is all or nothing and an entry was refused; nothing was taken",
                batch.rejected,
            )
        keep = [p for p, origin in enumerate(batch.origins()) if origin not in refused]
        if not keep:
            raise NothingValid("nothing_valid", "every entry was refused", batch.rejected)
        if len(keep) == len(batch.rows):
            return batch
        return Batch(
            batch.device_id,
            batch.patient_id,
            tuple(batch.rows[p] for p in keep),
            batch.rejected,
            tuple(batch.origins()[p] for p in keep),
        )

    def response(
        self, rejected: tuple[Rejection, ...], *, upload_id: str | None = None
    ) -> dict[str, Any]:
        """The batch-response or transaction-response Bundle: one entry per posted entry."""
        assert self.translation is not None
        translation = self.translation
        refusals: dict[int, list[Rejection]] = {}
        for r in rejected:
            refusals.setdefault(r.index, []).append(r)
        entries = []
        for index, entry in enumerate(translation.entries):
            found = refusals.get(index)
            if found:
                status = ENTRY_STATUS.get(found[0].code, BAD_REQUEST)
                outcome = fhir.operation_outcome(*(_issue(r, status) for r in found))
                entries.append({"response": {"status": status, "outcome": outcome}})
            elif entry.stored:
                # Accepted into the upload; stored once however often it is posted (the
                # database's key per reading), as a conditional create would.
                entries.append({"response": {"status": "201 Created"}})
            else:
                # Patient, Device (resolved against the registry, not created) and the
                # coincident time stamp (taken, not stored).
                entries.append({"response": {"status": "200 OK"}})
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": f"{translation.bundle_type}-response",
        }
        if upload_id is not None:
            bundle["identifier"] = {"system": "urn:vitals:upload", "value": upload_id}
        bundle["entry"] = entries
        return bundle


def _issue(r: Rejection, status: str) -> dict[str, Any]:
    where = _WHERE.get(r.code)
    expression = f"Bundle.entry[{r.index}].resource" + (f".{where}" if where else "")
    return fhir.issue(int(status[:3]), r.code, r.detail, expression=expression)

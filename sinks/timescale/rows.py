"""An upload from vitals.readings as rows of the readings table."""

from __future__ import annotations

import uuid
from datetime import datetime

from vitals.contract import Upload
from vitals.db.pgtime import from_ms
from vitals.errors import ContractError

# (patient_id, metric, t, device_id, value, unit, upload_id, received_at): the table's
# column order, which COPY relies on.
Row = tuple[str, str, datetime, str, float, str, uuid.UUID, datetime]
COLUMNS = ("patient_id", "metric", "t", "device_id", "value", "unit", "upload_id", "received_at")


def rows_of(upload: Upload) -> list[Row]:
    """ContractError when the upload cannot be stored (id not a UUID, time out of range)."""
    try:
        upload_id = uuid.UUID(upload.upload_id)
    except ValueError as exc:
        raise ContractError(f"upload_id is not a UUID: {exc}") from exc
    received = from_ms(upload.received)
    return [
        (
            upload.patient_id,
            r.metric,
            from_ms(r.t),
            upload.device_id,
            r.v,
            r.unit,
            upload_id,
            received,
        )
        for r in upload.readings
    ]

"""NEWS2 score records from vitals.news2 as rows of news2_scores, and their idempotent write.

A score is keyed by (patient_id, t). A later computation of the same moment (the
processor re-scoring after late data) replaces the row; a redelivered record writes the
same values again. Records arrive in the processor's order (one partition per patient),
so within a batch the last one for a key is the one kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import orjson

from vitals.contract import News2Score
from vitals.db.pgtime import from_ms

# (patient_id, t, news2, band, red, partial, spo2_scale, parameters (JSON text), computed_at)
ScoreRow = tuple[str, datetime, int, str, bool, bool, int, str, datetime]

UPSERT = """
INSERT INTO news2_scores (patient_id, t, news2, band, red, partial, spo2_scale, parameters,
                          computed_at)
SELECT patient_id, t, news2, band, red, partial, spo2_scale, parameters::jsonb, computed_at
FROM unnest($1::text[], $2::timestamptz[], $3::int2[], $4::text[], $5::boolean[],
            $6::boolean[], $7::int2[], $8::text[], $9::timestamptz[])
     AS s(patient_id, t, news2, band, red, partial, spo2_scale, parameters, computed_at)
ON CONFLICT (patient_id, t) DO UPDATE
SET news2 = EXCLUDED.news2, band = EXCLUDED.band, red = EXCLUDED.red,
    partial = EXCLUDED.partial, spo2_scale = EXCLUDED.spo2_scale,
    parameters = EXCLUDED.parameters, computed_at = EXCLUDED.computed_at
WHERE news2_scores.computed_at <= EXCLUDED.computed_at
"""


def score_row(score: News2Score) -> ScoreRow:
    """ContractError when a time is out of range."""
    parameters = {
        name: {"points": p.points, "value": p.value, "age_ms": p.age_ms}
        for name, p in score.parameters.items()
    }
    return (
        score.patient_id,
        from_ms(score.t),
        score.news2,
        score.band,
        score.red,
        score.partial,
        score.scale,
        orjson.dumps(parameters).decode(),
        from_ms(score.computed),
    )


def last_per_key(rows: Sequence[ScoreRow]) -> list[ScoreRow]:
    """One row per (patient_id, t), the last in stream order: one INSERT ... ON CONFLICT DO
    UPDATE may not touch a row twice."""
    return list({(row[0], row[1]): row for row in rows}.values())


async def upsert_scores(conn: asyncpg.Connection, rows: Sequence[ScoreRow]) -> int:
    """Write `rows` in one statement; returns the rows inserted or replaced."""
    if not rows:
        return 0
    unique = last_per_key(rows)
    status = await conn.execute(UPSERT, *(list(column) for column in zip(*unique, strict=True)))
    return int(status.rsplit(" ", 1)[1])

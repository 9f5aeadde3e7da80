"""Wire contract v1 between the stages: the Kafka messages on every topic.

One module, one definition of each message; no stage redefines a reading or an alert.
Documented in docs/wire-format.md (gateway and internal topics), docs/alert-schema.md and
docs/scores.md (NEWS2 score records).
All times inside messages are integers of milliseconds since the epoch, UTC.
"""

from __future__ import annotations

import base64
import functools
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from vitals.errors import ContractError

VERSION = 1
ALERT_SCHEMA = "vitals.alert/1"
# The human states of an alert (acknowledged, escalated, outcome) are published as v2:
# opened and resolved stay v1, byte for byte, so v1 subscribers keep working and skip
# what they do not know by its `schema` (docs/alert-schema.md).
ALERT_SCHEMA_V2 = "vitals.alert/2"

# Topic names (before Settings.topic_prefix).
READINGS = "vitals.readings"
DETECTIONS = "vitals.detections"
ALERTS = "vitals.alerts"
DEADLETTER = "vitals.deadletter"
NEWS2_SCORES = "vitals.news2"
# The processor's checkpoints (processors/checkpoint.py): compacted, internal.
PROCESSOR_STATE = "vitals.processor-state"
ALL_TOPICS = (READINGS, DETECTIONS, ALERTS, DEADLETTER, NEWS2_SCORES, PROCESSOR_STATE)

# uuid5 namespace for deterministic ids (alert ids, upload ids from Idempotency-Key).
NAMESPACE = uuid.UUID("6f1c2a3e-8d4b-5e7f-9a0b-1c2d3e4f5a6b")


class Reading(NamedTuple):
    """One canonical reading. A named tuple, not a dataclass: the gateway builds one per
    reading and the processor decodes one per reading; a tuple is twice as cheap to make."""

    metric: str
    t: int  # event time, ms since epoch UTC
    v: float  # in the metric's canonical unit
    unit: str


@dataclass(frozen=True, slots=True)
class Upload:
    """One accepted gateway POST: one message on vitals.readings, keyed by patient."""

    upload_id: str
    gateway_id: str
    device_id: str
    patient_id: str
    received: int  # wall clock at the gateway, ms
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True)
class Detection:
    """A state change of a clinical episode: one message on vitals.detections."""

    alert_id: str  # deterministic: patient, rule, episode start
    patient_id: str
    rule: str
    state: str  # "opened" | "resolved"
    severity: str  # "low" | "medium" | "high"
    episode_start: int  # event time, ms
    at: int  # event time of the state change, ms
    detected: int  # wall clock when the processor decided, ms
    retrospective: bool
    metric: str | None = None
    value: float | None = None
    device_id: str | None = None
    detail: str = ""
    # A repeat of the rule's episode soon after the last one resolved (processors/
    # episodes.py): recorded, not to be paged. Not in the public alert yet (docs/detectors.md).
    suppressed: bool = False


STATES = ("opened", "resolved")
LIFECYCLE_STATES = ("acknowledged", "escalated", "outcome")
# What the nurse who answered concluded (docs/alert-schema.md); measures the rules.
OUTCOMES = (
    "contacted_no_action",
    "advised",
    "escalated_to_physician",
    "emergency_services",
    "sensor_problem",
    "false_alarm",
)
SEVERITIES = ("low", "medium", "high")


# The NEWS2 parameters, in the order NEWS2 charts them; each is the reading metric that
# carries it. A score record names the ones it used (docs/scores.md).
NEWS2_PARAMETERS = (
    "resp_rate",
    "spo2",
    "supplemental_o2",
    "systolic_bp",
    "heart_rate",
    "consciousness",
    "body_temp",
)


@dataclass(frozen=True, slots=True)
class ScoredParameter:
    points: int  # 0 to 3
    value: float  # the reading scored, in its metric's canonical unit
    age_ms: int  # how long before the score's time it was measured


@dataclass(frozen=True, slots=True)
class News2Score:
    """A change of a patient's NEWS2 (total, band or parameters used): one message on
    vitals.news2, keyed by patient (docs/scores.md)."""

    patient_id: str
    t: int  # event time of the reading the score was computed at, ms
    news2: int
    band: str  # "zero" | "low" | "low-medium" | "medium" | "high"
    red: bool  # some single parameter scored 3
    partial: bool  # fewer than the seven parameters
    scale: int  # SpO2 scale, 1 or 2
    parameters: dict[str, ScoredParameter]  # the parameters used; the others were missing
    computed: int  # wall clock when the processor computed it, ms


BANDS = ("zero", "low", "low-medium", "medium", "high")


def alert_id(patient_id: str, rule: str, episode_start: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{patient_id}|{rule}|{episode_start}"))


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# --- encoding ------------------------------------------------------------------------


# A reading as its array on the wire: (metric, t, v, unit), a plain tuple. orjson writes
# plain tuples itself but not a named tuple (a subclass), which needs a copy per reading.
Row = tuple[str, int, float, str]


def encode_upload(upload: Upload) -> bytes:
    return encode_upload_rows(
        upload_id=upload.upload_id,
        gateway_id=upload.gateway_id,
        device_id=upload.device_id,
        patient_id=upload.patient_id,
        received=upload.received,
        rows=[tuple(r) for r in upload.readings],  # type: ignore[misc]
    )


def encode_upload_rows(
    *,
    upload_id: str,
    gateway_id: str,
    device_id: str,
    patient_id: str,
    received: int,
    rows: list[Row] | tuple[Row, ...],
) -> bytes:
    """encode_upload's message from readings already in wire order (the gateway's path:
    it validates into rows and never builds an Upload)."""
    return orjson.dumps(
        {
            "v": VERSION,
            "upload_id": upload_id,
            "gateway_id": gateway_id,
            "device_id": device_id,
            "patient_id": patient_id,
            "received": received,
            "readings": rows,
        }
    )


def decode_upload(raw: bytes | None) -> Upload:
    doc = _object(raw)
    try:
        readings = tuple(
            Reading(str(m), _int(t), float(v), str(u)) for m, t, v, u in doc["readings"]
        )
        return Upload(
            upload_id=_str(doc["upload_id"]),
            gateway_id=_str(doc["gateway_id"]),
            device_id=_str(doc["device_id"]),
            patient_id=_str(doc["patient_id"]),
            received=_int(doc["received"]),
            readings=readings,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ContractError(f"not a v{VERSION} upload: {exc!r}") from exc


def _versioned(message: Any) -> bytes:
    """A message dataclass as JSON, the contract version first. Its fields are copied
    shallow: orjson writes nested dataclasses (a score's parameters) itself, several times
    faster than `asdict`'s deep copy, which the processor paid for every score record."""
    return orjson.dumps(
        {"v": VERSION, **{name: getattr(message, name) for name in _fields(message.__class__)}}
    )


@functools.cache
def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def encode_detection(detection: Detection) -> bytes:
    return _versioned(detection)


def decode_detection(raw: bytes | None) -> Detection:
    doc = _object(raw)
    doc.pop("v", None)
    try:
        detection = Detection(**doc)
    except TypeError as exc:
        raise ContractError(f"not a v{VERSION} detection: {exc}") from exc
    if detection.state not in STATES or detection.severity not in SEVERITIES:
        raise ContractError(f"bad state or severity: {detection.state!r}/{detection.severity!r}")
    for name in ("alert_id", "patient_id", "rule"):
        _str(getattr(detection, name))
    for name in ("episode_start", "at", "detected"):
        _int(getattr(detection, name))
    if not isinstance(detection.suppressed, bool):
        raise ContractError("suppressed must be true or false")
    return detection


def encode_news2_score(score: News2Score) -> bytes:
    return _versioned(score)


def decode_news2_score(raw: bytes | None) -> News2Score:
    doc = _object(raw)
    try:
        parameters = doc["parameters"]
        if not isinstance(parameters, dict):
            raise TypeError("parameters is not an object")
        score = News2Score(
            patient_id=_str(doc["patient_id"]),
            t=_int(doc["t"]),
            news2=_int(doc["news2"]),
            band=_str(doc["band"]),
            red=_bool(doc["red"]),
            partial=_bool(doc["partial"]),
            scale=_int(doc["scale"]),
            parameters={
                _str(name): ScoredParameter(
                    _int(p["points"]), _number(p["value"]), _int(p["age_ms"])
                )
                for name, p in parameters.items()
            },
            computed=_int(doc["computed"]),
        )
    except (KeyError, TypeError) as exc:
        raise ContractError(f"not a v{VERSION} NEWS2 score: {exc!r}") from exc
    if score.band not in BANDS or score.scale not in (1, 2) or not 0 <= score.news2 <= 20:
        raise ContractError(f"bad band, scale or total: {score.band!r}/{score.scale}/{score.news2}")
    if not score.parameters or any(
        not 0 <= p.points <= 3 or p.age_ms < 0 for p in score.parameters.values()
    ):
        raise ContractError("parameters: each needs points 0-3 and an age >= 0")
    return score


def alert_document(detection: Detection, published: int) -> dict[str, Any]:
    """The public alert (docs/alert-schema.md): times as ISO 8601 UTC strings."""
    return {
        "schema": ALERT_SCHEMA,
        "alert_id": detection.alert_id,
        "patient_id": detection.patient_id,
        "rule": detection.rule,
        "state": detection.state,
        "severity": detection.severity,
        "retrospective": detection.retrospective,
        "episode_start": iso(detection.episode_start),
        "at": iso(detection.at),
        "detected_at": iso(detection.detected),
        "published_at": iso(published),
        "metric": detection.metric,
        "value": detection.value,
        "device_id": detection.device_id,
        "detail": detection.detail,
    }


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """A human state of an alert: acknowledged, escalated (level 1, 2, ...) or outcome."""

    state: str  # one of LIFECYCLE_STATES
    level: int  # escalated: the level reached; else 0
    at: int  # wall clock of the change, ms
    actor: str | None  # the reader who acted; None for an automatic escalation
    outcome: str | None = None


def lifecycle_document(
    opened: Detection, change: LifecycleChange, published: int
) -> dict[str, Any]:
    """The public v2 alert: the opened alert's fields, this change's state and time, and
    what v2 adds. The nurse's note is not in it (stored, shown to readers, not broadcast)."""
    document = alert_document(opened, published)
    document.update(
        schema=ALERT_SCHEMA_V2,
        state=change.state,
        at=iso(change.at),
        escalation_level=change.level,
        actor=change.actor,
        outcome=change.outcome,
    )
    return document


def encode_deadletter(
    *,
    stage: str,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> bytes:
    return orjson.dumps(
        {
            "v": VERSION,
            "stage": stage,
            "error": error,
            "origin": {"topic": topic, "partition": partition, "offset": offset},
            "key_b64": None if key is None else base64.b64encode(key).decode(),
            "value_b64": None if value is None else base64.b64encode(value).decode(),
            "parked": now_ms(),
        }
    )


# --- helpers -------------------------------------------------------------------------


def _object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise ContractError("empty message")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ContractError("not a JSON object")
    if doc.get("v") != VERSION:
        raise ContractError(f"unsupported contract version {doc.get('v')!r}")
    return doc


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ContractError(f"expected a non-empty string, got {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ContractError(f"expected true or false, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise ContractError(f"expected a number, got {value!r}")
    return float(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContractError(f"expected an integer, got {type(value).__name__}")
    return value

"""Taking one upload: read the body, answer a retry from the cache, validate, publish.

Below the route, above the pure parts (body limits, validation) and the producer. Writes
the one log line per upload (ids and counts only: never patient, device or values) and
the upload metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson
from starlette.requests import ClientDisconnect

from frontdoor.audit import AuditTrail
from frontdoor.errors import (
    Conflict,
    GatewayError,
    Malformed,
    NothingValid,
    RateLimited,
    RegistryUnavailable,
    Rejection,
    rejections_document,
)
from frontdoor.ratelimit import TokenBuckets, retry_after_s
from frontdoor.registry import Snapshot, outside_binding
from ingest import body, metrics
from ingest.idempotency import Accepted, Answer, IdempotencyCache, fingerprint, upload_id_for
from ingest.publisher import Publisher
from ingest.validation import Batch, validate_upload
from vitals import contract
from vitals.settings import Settings

log = logging.getLogger(__name__)


class Door(Protocol):
    """What a front door's format adds to the one intake path: the body's media types,
    its validation into a Batch, and the answer for what is left after the registry."""

    media_types: tuple[str, ...]

    def validate(self, raw: bytes, *, now_ms: int, max_future_skew_s: float, max_readings: int
                 ) -> Batch: ...  # fmt: skip

    def settle(self, upload_id: str, batch: Batch) -> tuple[Batch, bytes]:
        """The batch to publish and the answer to give once Kafka acknowledged it; raises
        GatewayError to refuse the whole upload (nothing is produced)."""
        ...


class ReadingsDoor:
    """POST /v1/readings: the JSON upload (docs/wire-format.md)."""

    media_types: tuple[str, ...] = (body.JSON,)

    def validate(self, raw: bytes, *, now_ms: int, max_future_skew_s: float, max_readings: int
                 ) -> Batch:  # fmt: skip
        return validate_upload(
            raw, now_ms=now_ms, max_future_skew_s=max_future_skew_s, max_readings=max_readings
        )

    def settle(self, upload_id: str, batch: Batch) -> tuple[Batch, bytes]:
        content = orjson.dumps(
            {
                "upload_id": upload_id,
                "accepted": len(batch.rows),
                "rejected": rejections_document(batch.rejected),
            }
        )
        return batch, content


READINGS = ReadingsDoor()


@dataclass(frozen=True, slots=True)
class Guards:
    """What the gateway checks besides the body: rate, device registry, audit trail."""

    limiter: TokenBuckets | None = None
    # The registry snapshot to enforce device bindings with; None = not enforced.
    registry: Callable[[], Snapshot] | None = None
    audit: AuditTrail | None = None


class Intake:
    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        cache: IdempotencyCache,
        guards: Guards | None = None,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._cache = cache
        self._guards = guards or Guards()

    async def accept(
        self,
        gateway_id: str,
        headers: Mapping[str, str],
        chunks: AsyncIterator[bytes],
        idempotency_key: str | None,
        door: Door = READINGS,
    ) -> tuple[Accepted, bool]:
        """The answer and whether it is a replay; raises GatewayError to refuse."""
        upload_id = upload_id_for(gateway_id, idempotency_key)
        audit = self._guards.audit
        try:
            self._limit(gateway_id)
            raw = await self._read(headers, chunks, door.media_types)
            if idempotency_key is None:
                answer, replayed = await self._take(door, gateway_id, upload_id, raw), False
            else:
                answer, replayed = await self._take_once(
                    door, gateway_id, idempotency_key, upload_id, raw
                )
        except GatewayError as refusal:
            refusal.upload_id = upload_id
            if isinstance(refusal, NothingValid):
                _count_rejected(refusal.rejected)
            metrics.count_upload(refusal.code)
            log.info(
                "upload refused",
                extra={
                    "upload_id": upload_id,
                    "gateway_id": gateway_id,
                    "outcome": refusal.code,
                    "status": refusal.status,
                },
            )
            if audit is not None:
                audit.upload(
                    gateway_id, outcome=refusal.code, status=refusal.status, upload_id=upload_id
                )
            raise
        outcome = "replayed" if replayed else "accepted"
        metrics.count_upload(outcome)
        if log.isEnabledFor(logging.INFO):  # else not even the record's fields
            log.info(
                "upload " + outcome,
                extra={
                    "upload_id": upload_id,
                    "gateway_id": gateway_id,
                    "outcome": outcome,
                    "accepted": answer.accepted,
                    "rejected": answer.rejected,
                },
            )
        if audit is not None:
            audit.upload(
                gateway_id,
                outcome=outcome,
                status=202,
                upload_id=answer.upload_id,
                accepted=answer.accepted,
                rejected=answer.rejected,
            )
        return answer, replayed

    def _limit(self, gateway_id: str) -> None:
        limiter = self._guards.limiter
        if limiter is None:
            return
        wait_s = limiter.take(gateway_id)
        if wait_s > 0:
            raise RateLimited(
                "rate_limited",
                f"more than {limiter.rate_per_s:g} uploads a second from this gateway; "
                "retry after Retry-After seconds",
                retry_after_s=retry_after_s(wait_s),
            )

    async def _read(
        self, headers: Mapping[str, str], chunks: AsyncIterator[bytes], media_types: tuple[str, ...]
    ) -> bytes:
        s = self._settings
        gzip = body.check_headers(headers, max_body_bytes=s.max_body_bytes, media_types=media_types)
        try:
            # A slow body (slowloris) is cut off by the connection's body deadline
            # (frontdoor/protocol.py): `chunks` then raises TimedOut.
            return await body.read_body(
                chunks,
                gzip=gzip,
                max_body_bytes=s.max_body_bytes,
                max_decompressed_bytes=s.max_decompressed_bytes,
            )
        except ClientDisconnect:
            # Common on poor networks; the gateway retries. Counted and logged as a
            # refusal (nobody reads the answer) rather than a 500 with a traceback.
            raise Malformed(
                "client_disconnected", "the connection closed before the body was complete"
            ) from None

    async def _take_once(
        self, door: Door, gateway_id: str, key: str, upload_id: str, raw: bytes
    ) -> tuple[Accepted, bool]:
        cache_key = (gateway_id, key)
        seen = fingerprint(raw)
        async with self._cache.exclusive(cache_key):
            answer = self._cache.get(cache_key)
            if answer is not None:
                if answer.fingerprint != seen:
                    raise Conflict(
                        "idempotency_conflict",
                        "this Idempotency-Key was used for a different body; "
                        "use a new key for new data",
                    )
                return answer.accepted, True
            accepted = await self._take(door, gateway_id, upload_id, raw)
            self._cache.put(cache_key, Answer(seen, accepted))
            return accepted, False

    async def _take(self, door: Door, gateway_id: str, upload_id: str, raw: bytes) -> Accepted:
        s = self._settings
        received = contract.now_ms()
        batch = door.validate(
            raw,
            now_ms=received,
            max_future_skew_s=s.max_future_skew_s,
            max_readings=s.max_readings_per_upload,
        )
        batch, content = door.settle(upload_id, self._bound_to_registry(gateway_id, batch))
        message = contract.encode_upload_rows(
            upload_id=upload_id,
            gateway_id=gateway_id,
            device_id=batch.device_id,
            patient_id=batch.patient_id,
            received=received,
            rows=batch.rows,
        )
        started = time.perf_counter()
        await self._publisher.publish_message(message, batch.patient_id)
        metrics.PRODUCE_SECONDS.observe(time.perf_counter() - started)
        accepted = len(batch.rows)
        metrics.READINGS_ACCEPTED.inc(accepted)
        _count_rejected(batch.rejected)
        return Accepted(upload_id, content, accepted, len(batch.rejected))

    def _bound_to_registry(self, gateway_id: str, batch: Batch) -> Batch:
        """The batch without readings outside the device's binding to its patient.

        Raises Forbidden (nothing produced) when the device is not this gateway's or not
        this patient's; RegistryUnavailable while the registry has never been loaded.
        """
        registry = self._guards.registry
        if registry is None:
            return batch
        snapshot = registry()
        if not snapshot.loaded:
            raise RegistryUnavailable(
                "registry_unavailable",
                "the device registry is not loaded yet; retry later",
                retry_after_s=self._settings.retry_after_s,
            )
        outside = outside_binding(
            snapshot,
            gateway_id=gateway_id,
            device_id=batch.device_id,
            patient_id=batch.patient_id,
            times=[row[1] for row in batch.rows],  # (metric, t, v, unit)
        )
        if not outside:
            return batch
        upload_index = batch.origins()
        dropped = set(outside)
        extra = [
            Rejection(
                upload_index[p],
                "outside_binding",
                "t is outside the time this device was bound to this patient",
            )
            for p in outside
        ]
        rejected = tuple(sorted((*batch.rejected, *extra), key=lambda r: r.index))
        rows = tuple(r for p, r in enumerate(batch.rows) if p not in dropped)
        if not rows:
            raise NothingValid("nothing_valid", "every reading was rejected", rejected)
        origins = tuple(o for p, o in enumerate(upload_index) if p not in dropped)
        return Batch(batch.device_id, batch.patient_id, rows, rejected, origins)


def _count_rejected(rejected: Iterable[Rejection]) -> None:
    for rejection in rejected:
        metrics.READINGS_REJECTED.labels(rejection.code).inc()

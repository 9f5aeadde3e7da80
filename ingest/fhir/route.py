"""POST /fhir/r4 (and /fhir/r4/): a FHIR batch or transaction Bundle through the intake.

Authentication, the Idempotency-Key, limits, validation, the device registry, the audit
and the produce are the /v1/readings path's (ingest/intake.py), with the Bundle as its
door (door.py). Answers are FHIR: 200 with the batch-response or transaction-response
Bundle, or the refusal as an OperationOutcome with the JSON API's status and code.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from frontdoor.errors import GatewayError, NothingValid, TransactionRefused
from frontdoor.fhir import fhir_response, outcome_response
from ingest.fhir.door import BundleDoor
from ingest.intake import Intake
from ingest.routes import body_chunks, first_headers, idempotency_key
from vitals import fhir

PATHS = ("/fhir/r4", "/fhir/r4/")


class PostBundle:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        headers = first_headers(scope)
        door = BundleDoor()
        try:
            gateway = state.authenticator.gateway_for(headers.get("authorization"))
            key = idempotency_key(headers.get("idempotency-key"))
            intake: Intake = state.intake
            chunks = body_chunks(scope, receive, state.settings.body_timeout_s)
            answer, replayed = await intake.accept(gateway, headers, chunks, key, door)
        except GatewayError as refusal:
            translation = door.translation
            if (
                isinstance(refusal, NothingValid)
                and not isinstance(refusal, TransactionRefused)
                and translation is not None
                and translation.bundle_type == "batch"
            ):
                # A batch answers per entry even when it took none of them.
                document = door.response(refusal.rejected, upload_id=refusal.upload_id)
                await fhir_response(document)(scope, receive, send)
                return
            await outcome_response(refusal)(scope, receive, send)
            return
        replay = {"Idempotent-Replayed": "true"} if replayed else None
        await Response(answer.content, 200, replay, media_type=fhir.MEDIA_TYPE)(
            scope, receive, send
        )

"""The console's live stream: server-sent events of the board (docs/read-api.md#live).

Server-sent events rather than a WebSocket: the stream is one-way (actions are ordinary
POSTs), it is plain HTTP that proxies and the read API's own limits already handle, and the
browser's EventSource reconnects by itself. EventSource cannot send an Authorization
header, and a reader key in a URL would land in proxies' logs, so the page first trades
its key (by fetch, in the header) for a ticket: the key's id and an expiry, signed with
the API's cursor key (params.py), valid `api_live_ticket_s` (a minute) and only for
opening a stream. A leaked ticket is worth a minute of the board, never the key.

A stream begins with `snapshot` (the board, as GET /v1/board), then sends `alert` and
`news2` deltas of the reader's care teams as the live feed (live.py) reads them, a new
snapshot every `api_live_snapshot_s` (the latest vitals are not on the topics), and a
comment line when nothing else was sent for `api_live_heartbeat_s`. Every
`registry_refresh_s` the key is looked up again: revoked or expired, the stream ends with
`closed` and its reason, as it does for a client that fell behind (`slow_client`). A client
that reconnects takes a new ticket and a new snapshot, so Last-Event-ID is not needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from frontdoor.errors import GatewayError, Malformed, Unauthenticated
from frontdoor.problems import json_response
from frontdoor.registry import Credential, Snapshot
from readapi import params
from readapi.alert_routes import board_snapshot
from readapi.live import Event, Feed, Subscriber
from readapi.routes import Reader, access_of, query_lists
from vitals import contract

router = APIRouter()

TICKET_SCOPE = "console-ticket"
ROUTE = "console/events"
RETRY_MS = 2000  # EventSource's own reconnection delay


def feed_of(request: Request) -> Feed:
    return request.app.state.feed


@router.post("/v1/console/ticket")
async def ticket(request: Request, key: Reader) -> Response:
    """A ticket to open one event stream: the key's id and an expiry, signed."""
    params.only(query_lists(request), ())
    expires = datetime.now(UTC) + timedelta(seconds=request.app.state.settings.api_live_ticket_s)
    signed = params.encode_cursor(
        params.Cursor(TICKET_SCOPE, expires, (key.key_id,)), request.app.state.cursor_key
    )
    return json_response({"ticket": signed, "expires_at": expires}, 201)


@router.get("/v1/console/events")
async def events(request: Request) -> Response:
    q = params.only(query_lists(request), ("ticket",))
    reader = _ticket_holder(request, q.get("ticket"))
    feed = feed_of(request)
    # Subscribed before the snapshot is read: a change in between is sent after it (the
    # page applies a change twice harmlessly), none falls between the two.
    subscriber = feed.subscribe()
    try:
        first = await board_snapshot(request, reader, ROUTE)  # limits refuse here, as 429
    except BaseException:
        feed.unsubscribe(subscriber)
        raise
    return StreamingResponse(
        _stream(request, reader, first, subscriber),
        media_type="text/event-stream",
        # no-store: nothing of a patient cached; no buffering by nginx-like proxies.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request, reader: Credential, first: dict[str, Any], subscriber: Subscriber
) -> AsyncIterator[bytes]:
    settings = request.app.state.settings
    feed, access = feed_of(request), access_of(request)
    loop = asyncio.get_running_loop()
    now = loop.time()
    next_check, next_snapshot = (
        now + settings.registry_refresh_s,
        now + settings.api_live_snapshot_s,
    )
    scope = _scope(access.patients(reader))
    try:
        yield f"retry: {RETRY_MS}\n".encode() + _frame("snapshot", first, live=feed.up)
        last_sent = loop.time()
        while True:
            wake = min(next_check, next_snapshot, last_sent + settings.api_live_heartbeat_s)
            item: Event | str | None = None
            try:
                async with asyncio.timeout(max(0.0, wake - loop.time())):
                    item = await subscriber.queue.get()
            except TimeoutError:
                pass
            if isinstance(item, str):
                yield _closed(item)
                return
            now = loop.time()
            if now >= next_check:
                next_check = now + settings.registry_refresh_s
                found = _credential(request, reader.key_id)
                why = _invalid(found)
                if found is None or why is not None:
                    yield _closed(why or "revoked_credential")
                    return
                reader = found  # with its care teams as they are now
                scope = _scope(access.patients(reader))
            if item is not None and (scope is None or item.patient_id in scope):
                if not access.delivered(reader, ROUTE, item.patient_id):
                    yield _closed("audit_unavailable")
                    return
                yield _frame(item.kind, item.data)
                last_sent = now
            if now >= next_snapshot:
                next_snapshot = now + settings.api_live_snapshot_s
                try:
                    board = await board_snapshot(request, reader, ROUTE)
                except GatewayError as exc:  # rate or row limit, audit full: said, then ended
                    yield _closed(exc.code)
                    return
                yield _frame("snapshot", board, live=feed.up)
                last_sent = now
            if loop.time() - last_sent >= settings.api_live_heartbeat_s:
                yield b": heartbeat\n\n"
                last_sent = loop.time()
    finally:
        feed.unsubscribe(subscriber)


def _ticket_holder(request: Request, value: str | None) -> Credential:
    """The reader key behind a ticket, as it is in the registry now."""
    if not value:
        raise Unauthenticated(
            "missing_ticket", "open the stream with ?ticket= from POST /v1/console/ticket",
            token_given=False,
        )  # fmt: skip
    try:
        ticket = params.decode_cursor(value, TICKET_SCOPE, request.app.state.cursor_key)
    except Malformed:
        ticket = None
    if ticket is None or len(ticket.tie) != 1:
        raise Unauthenticated(
            "invalid_ticket", "the ticket is not one this API issued", token_given=True
        )
    # The key before the ticket's age: a revoked key's page must sign out, not retry.
    key_id = str(ticket.tie[0])
    found = _credential(request, key_id)
    why = _invalid(found)
    if found is None or why is not None:
        raise Unauthenticated(
            why or "revoked_credential", f"key {key_id} is no longer valid", token_given=True
        )
    if datetime.now(UTC) >= ticket.at:
        raise Unauthenticated(
            "expired_ticket", "the ticket has expired: take a new one", token_given=True
        )
    return found


def _credential(request: Request, key_id: str) -> Credential | None:
    """The reader key `key_id` in the registry as last refreshed."""
    snapshot: Snapshot = request.app.state.keys.current()
    for found in snapshot.credentials.values():
        if found.key_id == key_id and found.kind == "reader":
            return found
    return None


def _invalid(found: Credential | None) -> str | None:
    """Why the key may not read any more, or None."""
    if found is None or found.revoked:
        return "revoked_credential"
    if found.expires_ms is not None and contract.now_ms() >= found.expires_ms:
        return "expired_credential"
    return None


def _scope(patients: list[str] | None) -> frozenset[str] | None:
    return None if patients is None else frozenset(patients)


def _frame(kind: str, data: dict[str, Any], **extra: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({**data, **extra}) + b"\n\n"


def _closed(reason: str) -> bytes:
    return _frame("closed", {"reason": reason})

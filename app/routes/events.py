"""Server-sent events of a recording's progress, resumable with Last-Event-ID (ids are Redis Stream ids).

A stream costs a greenlet and one pooled Redis connection while it waits (web runs gunicorn's gevent worker),
holds a lease counted against MAX_EVENT_STREAMS_PER_RECORDING and MAX_EVENT_STREAMS_PER_TOKEN, and ends
when the recording ends, when its token expires, or within a keep-alive or two of its client going away.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Iterator

import redis
from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from app.auth import authenticate, bearer_token, token_expiry
from app.guards import visible_recording
from app.services import EXTENSION_KEY, SOCKET_TIMEOUT_SECONDS, services
from workers.errors import InvalidRequest
from workers.events import EventPublisher
from workers.ids import check_id
from workers.redis_client import for_settings
from workers.state import FINAL_STATES, RecordingStore
from workers.status import NO_OUTPUT
from workers.stream_leases import StreamLease, StreamLimiter

bp = Blueprint("events", __name__, url_prefix="/video-calls")

BLOCK_MS = 5_000
"""How long one XREAD waits before a keep-alive comment (proxies drop idle connections, and the write is how a
closed client is noticed); under the socket timeout and well under the lease's lifetime."""
STREAM_POOL_CONNECTIONS = 1000
"""Redis connections for blocked stream reads per process: one per connection gevent accepts
(--worker-connections); redis-py's default pool stops at 100 and then fails instead of waiting."""
FINAL_EVENT_WAIT_MS = 1_000
"""After the state turns final, how long to wait for its event (published right after the state is written)."""
STREAM_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"
"""ASCII digits only: \\d also matches other scripts' digits, which Redis rejects (as it does parts above 2**64-1)."""
MAX_STREAM_ID_PART = 2**64 - 1
STREAMS_EXTENSION_KEY = "tapedeck.event_streams"


@dataclass(frozen=True)
class EventStreams:
    """What the streams of one app share: a reader on its own connection pool, and the stream caps."""

    reader: EventPublisher
    limiter: StreamLimiter


@bp.record_once
def _init(state: BlueprintSetupState) -> None:
    """Builds the streams' own Redis pool (connects lazily), so blocked reads never starve the API's pool."""
    settings = state.app.extensions[EXTENSION_KEY].settings
    if settings.redis_sentinels:  # follow the master; Sentinel's pool is not a blocking one
        client = for_settings(settings, socket_timeout=SOCKET_TIMEOUT_SECONDS, health_check_interval=30,
                              max_connections=STREAM_POOL_CONNECTIONS)
    else:
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=STREAM_POOL_CONNECTIONS, timeout=BLOCK_MS / 1000,
            socket_timeout=SOCKET_TIMEOUT_SECONDS, health_check_interval=30)
        client = redis.Redis(connection_pool=pool)
    limiter = StreamLimiter(client, settings.max_event_streams_per_recording, settings.max_event_streams_per_token)
    state.app.extensions[STREAMS_EXTENSION_KEY] = EventStreams(EventPublisher(client), limiter)


def _resume_from() -> str:
    raw = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or "0-0"
    if not re.fullmatch(STREAM_ID, raw) or any(int(part) > MAX_STREAM_ID_PART for part in raw.split("-")):
        raise InvalidRequest("Last-Event-ID must be an id this stream sent", field="Last-Event-ID")
    return raw


def _frame(event_id: str | None, event: dict) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event.get('type', 'progress')}\ndata: {json.dumps(event)}\n\n"


def _error(code: str, message: str) -> str:
    return _frame(None, {"type": "error", "code": code, "message": message})


@bp.get("/recordings/<recording_id>/events")
def stream(recording_id: str):
    principal = authenticate()
    check_id(recording_id, "recordingId")
    after = _resume_from()
    svc = services()
    visible_recording(principal, recording_id)
    # The caps are checked after the room, so a token of another room cannot use up this recording's slots.
    token = bearer_token() or ""
    streams: EventStreams = current_app.extensions[STREAMS_EXTENSION_KEY]
    lease = streams.limiter.acquire(recording_id, token)
    viewer = None if principal.is_host else principal.sub  # as the status: a participant sees only itself
    body = _follow(streams.reader, svc.store, lease, recording_id, after, token_expiry(token), viewer)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(body, mimetype="text/event-stream", headers=headers)  # needs no request context
    response.call_on_close(lease.release)  # the server closes every response, however it ended
    return response


def _shown_to(viewer: str | None, event: dict) -> dict:
    """The event as this token may see it: a participant (viewer) gets every event, but only its own id in
    `participantId` (another participant's progress still moves the bar, without naming who), and a failure's
    error without the others' reasons."""
    if viewer is None:
        return event
    shown = {k: v for k, v in event.items() if k != "participantId" or v == viewer}
    if isinstance(shown.get("error"), str) and shown["error"].startswith(NO_OUTPUT):
        shown["error"] = NO_OUTPUT  # it goes on with every participant's id and reason (the status shows its own)
    return shown


def _follow(reader: EventPublisher, store: RecordingStore, lease: StreamLease, recording_id: str, after: str,
            expires_at: float, viewer: str | None = None) -> Iterator[str]:
    """Events after `after` until a final state, the token's expiry or a Redis failure (then an error event);
    viewer: the participant's sub (None for a host), see _shown_to."""
    last = after
    yield "retry: 2000\n\n"
    try:
        while True:
            remaining_ms = int((expires_at - time.time()) * 1000)
            if remaining_ms <= 0:
                yield _error("token_expired", "the token has expired; reconnect with a fresh one")
                return
            for event_id, event in reader.read(recording_id, after=last, block_ms=min(BLOCK_MS, remaining_ms)):
                last = event_id
                yield _frame(event_id, _shown_to(viewer, event))
                if event.get("type") == "state" and event.get("state") in FINAL_STATES:
                    return
            lease.refresh()
            state = (store.get(recording_id) or {}).get("state")
            if state in FINAL_STATES:
                # The state is written just before its event is published: read once more, so a client sees
                # the real event (with an id to resume from); only a trimmed or lost one is synthesized.
                late = reader.read(recording_id, after=last, block_ms=FINAL_EVENT_WAIT_MS)
                for event_id, event in late:
                    yield _frame(event_id, _shown_to(viewer, event))
                if not any(e.get("type") == "state" and e.get("state") in FINAL_STATES for _i, e in late):
                    yield _frame(None, {"type": "state", "state": state, "recordingId": recording_id})
                return
            yield ": keep-alive\n\n"
    except redis.RedisError:
        yield _error("unavailable", "state store is unavailable; the browser reconnects on its own")

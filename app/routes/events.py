"""Server-sent events of a recording's progress, resumable with Last-Event-ID (ids are Redis Stream ids)."""
from __future__ import annotations

import json
import re
from typing import Iterator

from flask import Blueprint, Response, request, stream_with_context

from app.auth import authenticate
from app.services import services
from workers.errors import InvalidRequest, NotFound
from workers.ids import check_id
from workers.state import FINAL_STATES

bp = Blueprint("events", __name__, url_prefix="/video-calls")

BLOCK_MS = 5_000
"""How long one XREAD waits before a keep-alive comment (proxies drop idle connections); under the socket timeout."""
STREAM_ID = r"^\d{1,20}-\d{1,20}$"


def _resume_from() -> str:
    raw = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or "0-0"
    if not re.fullmatch(STREAM_ID, raw):
        raise InvalidRequest("Last-Event-ID must be an id this stream sent", field="Last-Event-ID")
    return raw


def _frame(event_id: str | None, event: dict) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event.get('type', 'progress')}\ndata: {json.dumps(event)}\n\n"


@bp.get("/recordings/<recording_id>/events")
def stream(recording_id: str):
    principal = authenticate()
    check_id(recording_id, "recordingId")
    after = _resume_from()
    svc = services()
    recording = svc.store.get(recording_id)
    if recording is None:
        raise NotFound("no such recording", recordingId=recording_id)
    principal.require_room(recording["room"])

    def generate() -> Iterator[str]:
        last = after
        yield "retry: 2000\n\n"
        while True:
            for event_id, event in svc.events.read(recording_id, after=last, block_ms=BLOCK_MS):
                last = event_id
                yield _frame(event_id, event)
                if event.get("type") == "state" and event.get("state") in FINAL_STATES:
                    return
            state = (svc.store.get(recording_id) or {}).get("state")
            if state in FINAL_STATES:  # final event trimmed away or never written: say so and end
                yield _frame(None, {"type": "state", "state": state, "recordingId": recording_id})
                return
            yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(generate()), mimetype="text/event-stream", headers=headers)

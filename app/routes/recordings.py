"""Start, stop and inspect a room's recording."""
from __future__ import annotations

import time
import uuid

from flask import Blueprint, jsonify, request

from app.auth import authenticate
from app.control import require_control_address
from app.guards import controlled_recording, visible_recording
from app.schemas import parse_start
from app.services import services
from tasks.maintenance import finalize_after_stop
from tasks.webhooks import enqueue_webhook
from workers.errors import AlreadyRecording, RoomNeverRecorded, Unavailable
from workers.ids import check_id, new_recording_id
from workers.state import ACTIVE_STATES
from workers.status import build_status

bp = Blueprint("recordings", __name__, url_prefix="/video-calls")


@bp.post("/<room>/recording/start")
def start(room: str):
    principal = authenticate()
    check_id(room, "room")
    require_control_address(principal, room)
    body = parse_start(request)
    principal.require_host(room)
    svc = services()
    fmt = body.format or svc.settings.recording_format
    live = svc.store.current(room)
    if live and (svc.store.get(live) or {}).get("state") in {state.value for state in ACTIVE_STATES}:
        raise AlreadyRecording("this room is already recording", recordingId=live)
    recording_id = new_recording_id()
    _stage_descriptor(svc, recording_id, {"recordingId": recording_id, "room": room, "format": fmt,
                                          "metadata": body.metadata, "startedAt": time.time()})
    created, current = svc.store.start(room, recording_id, fmt, body.metadata)
    if not created:  # another start won the race after the check above: its descriptor is the one that counts
        svc.staging.remove_recording(recording_id)
        raise AlreadyRecording("this room is already recording", recordingId=current)
    svc.events.publish(recording_id, {"type": "state", "state": "recording"})
    enqueue_webhook(recording_id, "recording.started", room, {"format": fmt, "metadata": body.metadata}, svc)
    return jsonify(recordingId=recording_id, room=room, state="recording", format=fmt), 201


def _stage_descriptor(svc, recording_id: str, facts: dict) -> None:
    """Staging keeps recording.json before the recording exists: without it, `rebuild` after a lost Redis cannot
    bring back a recording whose chunks are staged. Staging that cannot keep it (writes are best effort there) is
    503 and nothing is created, as for a chunk."""
    svc.staging.remember(recording_id, facts)
    if svc.staging.recall(recording_id) is None:
        raise Unavailable("chunk staging cannot keep the recording's descriptor; retry later")


@bp.get("/<room>/recording")
def current(room: str):
    principal = authenticate()
    check_id(room, "room")
    svc = services()
    recording_id = svc.store.current(room)
    recording = svc.store.get(recording_id) if recording_id else None
    if recording is None:
        raise RoomNeverRecorded("this room has no recording")
    principal.require_room(room)
    return jsonify(recordingId=recording_id, state=recording["state"])


@bp.post("/<room>/recording/stop")
def stop(room: str):
    controlled_recording(room)
    svc = services()
    outcome = svc.store.stop(room, svc.settings.finalize_grace_seconds, task_id=str(uuid.uuid4()))
    if outcome is None:
        raise RoomNeverRecorded("this room has no recording (none was started, or the last one was deleted)")
    recording_id, state, task_id, newly_stopped = outcome
    if newly_stopped:
        finalize_after_stop(svc, recording_id, task_id, room, "host")
    return jsonify(recordingId=recording_id, state=state, taskId=task_id or None), 202


@bp.get("/recordings/<recording_id>")
def status(recording_id: str):
    principal = authenticate()
    check_id(recording_id, "recordingId")
    svc = services()
    recording = visible_recording(principal, recording_id)
    only = None if principal.is_host else principal.sub  # a participant sees the state and only itself
    return jsonify(build_status(svc.store, recording_id, url_for=svc.download_url, rec=recording, only=only))

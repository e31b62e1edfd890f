"""Recording lifecycle routes beyond start/stop: pause, resume, listing, deletion, and which chunks are held."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app.auth import authenticate
from app.control import require_control_address
from app.guards import controlled_recording, visible_recording
from app.services import services
from tasks.lifecycle import enqueue_purge
from workers.errors import Forbidden, InvalidRequest, InvalidState, NotFound, RoomNeverRecorded
from workers.ids import MAX_SEQUENCE, check_id, check_stream_type
from workers.lifecycle_listing import DEFAULT_LIMIT, MAX_LIMIT, CursorGone, list_recordings
from workers.lifecycle_ranges import MAX_RANGES, held_ranges
from workers.pause import MAX_PAUSES, PauseControl
from workers.purge import mark_deleting
from workers.state import State

STATES = tuple(s.value for s in State)

bp = Blueprint("lifecycle", __name__, url_prefix="/video-calls")


def _bounded_int(name: str, low: int, high: int, default: int) -> int:
    """A query integer in [low, high]; anything else is 400 naming the parameter."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 8 and low <= int(raw) <= high):
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


@bp.get("/recordings/<recording_id>/participants/<participant_id>/<stream_type>/chunks")
def held_chunks(recording_id: str, participant_id: str, stream_type: str):
    principal = authenticate()
    check_id(recording_id, "recordingId")
    check_id(participant_id, "participantId")
    check_stream_type(stream_type)
    after = _bounded_int("after", 0, MAX_SEQUENCE, -1)
    limit = _bounded_int("limit", 1, MAX_RANGES, MAX_RANGES)
    visible_recording(principal, recording_id)
    if not principal.is_host and participant_id != principal.sub:
        raise Forbidden("only that participant or a host can see its chunks")
    page = held_ranges(services().redis, recording_id, participant_id, stream_type, after=after, limit=limit)
    return jsonify(page.body())


def _pause_or_resume(room: str, action: str):
    """Pause and resume share the API's order: token, path, control address, recording (404), host (403), state (409)."""
    _, recording_id = controlled_recording(room)
    svc = services()
    control = PauseControl(svc.redis)
    outcome, state = control.pause(recording_id) if action == "pause" else control.resume(recording_id)
    if outcome == "not_found":
        raise RoomNeverRecorded("this room has no recording (none was started, or the last one was deleted)")
    if outcome == "too_many":
        raise InvalidState(f"a recording may pause at most {MAX_PAUSES} times", recordingId=recording_id,
                           state=state)
    if outcome == "invalid_state":
        raise InvalidState(f"cannot {action} a recording that is {state}", recordingId=recording_id, state=state)
    _remember_pauses(svc, recording_id)
    svc.events.publish(recording_id, {"type": "state", "state": state})
    return jsonify(recordingId=recording_id, state=state)


def _remember_pauses(svc, recording_id: str) -> None:
    """Staging's descriptor follows the pauses, so `rebuild` after a lost Redis still cuts the paused media."""
    from workers.rebuild import descriptor

    rec = svc.store.get(recording_id)
    if rec is not None:
        svc.staging.remember(recording_id, descriptor(rec))


@bp.post("/<room>/recording/pause")
def pause(room: str):
    return _pause_or_resume(room, "pause")


@bp.post("/<room>/recording/resume")
def resume(room: str):
    return _pause_or_resume(room, "resume")


@bp.get("/<room>/recordings")
def listing(room: str):
    principal = authenticate()
    check_id(room, "room")
    limit = _bounded_int("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    cursor = request.args.get("cursor")
    if cursor is not None:
        check_id(cursor, "cursor")
    state = request.args.get("state")
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)}", field="state")
    principal.require_room(room)
    try:
        page = list_recordings(services().redis, room, limit=limit, cursor=cursor, state=state)
    except CursorGone:
        raise NotFound("cursor names no recording of this room; list again from the start", cursor=cursor) from None
    return jsonify(page.body())


@bp.delete("/recordings/<recording_id>")
def delete(recording_id: str):
    """202 deleting; only completed or failed recordings; a lost purge is re-queued by a repeat after a while."""
    principal = authenticate()
    check_id(recording_id, "recordingId")
    svc = services()
    room = svc.store.room_of(recording_id)
    if room is None:
        raise NotFound("no such recording", recordingId=recording_id)
    require_control_address(principal, room)
    principal.require_host(room)
    outcome, state = mark_deleting(svc.redis, recording_id)
    if outcome == "not_found":
        raise NotFound("no such recording", recordingId=recording_id)
    if outcome == "invalid_state":
        raise InvalidState(f"only a completed or failed recording can be deleted; this one is {state}",
                           recordingId=recording_id, state=state)
    if outcome == "queued":
        enqueue_purge(recording_id, room)
    return jsonify(recordingId=recording_id, state="deleting"), 202

"""The look-ups routes share before acting, kept in one place so every route answers in the API's order:
token (401), path (400), control address (403), recording (404), role or room (403), state (409)."""
from __future__ import annotations

from app.auth import authenticate
from app.control import require_control_address
from app.services import services
from workers.access import Principal
from workers.errors import NotFound, RoomNeverRecorded
from workers.ids import check_id


def visible_recording(principal: Principal, recording_id: str) -> dict:
    """The recording by id for a caller of its room: 404 when there is none, 403 for a token of another room."""
    recording = services().store.get(recording_id)
    if recording is None:
        raise NotFound("no such recording", recordingId=recording_id)
    principal.require_room(recording["room"])
    return recording


def controlled_recording(room: str) -> tuple[Principal, str]:
    """The host's token and the room's current recording id, for the routes that control it (stop, pause, resume)."""
    principal = authenticate()
    check_id(room, "room")
    require_control_address(principal, room)
    recording_id = services().store.current(room)
    if recording_id is None:
        raise RoomNeverRecorded("this room has no recording (none was started, or the last one was deleted)")
    principal.require_host(room)
    return principal, recording_id

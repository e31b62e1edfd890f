"""What Flower (and the task events) show as a task's arguments: `room=<room> recording=<id>` (the room first:
Flower's column cuts long text), so an operator finds a job by either by typing it into Flower's search box. Sent as Celery's argsrepr: the task still receives
only the recording id."""
from __future__ import annotations


def argsrepr(recording_id: str, room: str | None = None) -> str:
    return f"room={room} recording={recording_id}" if room else f"recording={recording_id}"

"""The status body of DESIGN.md §4, built from Redis."""
from __future__ import annotations

import json
from typing import Callable, Iterable

from workers.state import ChunkRecord, RecordingStore, iso

MAX_LISTED_MISSING = 1000
"""The status lists at most this many missing sequences (the lowest); missingCount has the total."""


def missing_sequences(present: Iterable[int], limit: int = MAX_LISTED_MISSING) -> tuple[list[int], int]:
    """Holes in 0..max(present): the lowest `limit` of them and how many there are in all."""
    listed: list[int] = []
    count = 0
    expected = 0
    for seq in sorted(present):
        if seq > expected:
            gap = seq - expected
            count += gap
            listed.extend(range(expected, min(seq, expected + limit - len(listed))))
        expected = seq + 1
    return listed[:limit], count


def stream_summary(chunks: dict[int, ChunkRecord]) -> dict:
    if not chunks:
        return {"chunks": 0, "bytes": 0, "firstSequence": None, "lastSequence": None, "missing": [], "missingCount": 0}
    missing, count = missing_sequences(chunks)
    return {
        "chunks": len(chunks),
        "bytes": sum(c.size for c in chunks.values()),
        "firstSequence": min(chunks),
        "lastSequence": max(chunks),
        "missing": missing,
        "missingCount": count,
    }


def _float(raw: str | None) -> float | None:
    return float(raw) if raw else None


def _json(raw: str | None, default):
    return json.loads(raw) if raw else default


def build_status(store: RecordingStore, recording_id: str, url_for: Callable[[str], str | None] | None = None,
                 rec: dict[str, str] | None = None) -> dict | None:
    """The full status body, or None for an unknown recording. url_for refreshes download URLs; pass rec
    when the caller has just read the recording hash."""
    rec = rec if rec is not None else store.get(recording_id)
    if rec is None:
        return None
    errors: dict = _json(rec.get("participantErrors"), {})
    participants: dict[str, dict] = {}
    for participant_id, kind in store.streams(recording_id):
        entry = participants.setdefault(participant_id, {"error": errors.get(participant_id)})
        entry[kind] = stream_summary(store.chunks(recording_id, participant_id, kind))
    for participant_id, message in errors.items():
        participants.setdefault(participant_id, {"error": message})
    outputs = _json(rec.get("outputs"), [])
    if url_for:
        for output in outputs:
            output["url"] = url_for(output["key"]) or output.get("url")
            if output.get("thumbnailKey"):
                output["thumbnailUrl"] = url_for(output["thumbnailKey"]) or output.get("thumbnailUrl")
    return {
        "recordingId": recording_id,
        "room": rec["room"],
        "state": rec["state"],
        "progress": float(rec.get("progress") or 0),
        "format": rec.get("format", "webm"),
        "startedAt": iso(_float(rec.get("startedAt"))),
        "stoppedAt": iso(_float(rec.get("stoppedAt"))),
        "completedAt": iso(_float(rec.get("completedAt"))),
        "error": rec.get("error") or None,
        "upload": {"bytesSent": int(rec["bytesSent"]), "bytesTotal": int(rec["bytesTotal"])} if rec.get("bytesTotal") else None,
        "metadata": _json(rec.get("metadata"), {}),
        "taskId": rec.get("taskId") or None,
        "participants": participants,
        "outputs": outputs,
    }

"""manifest.json: everything a player or an archive needs to line participants up and trust the files."""
from __future__ import annotations

import json
import time

from workers.state import ChunkRecord, iso
from workers.status import stream_summary

CONTENT_TYPES = {"webm": "video/webm", "mkv": "video/x-matroska", "mp4": "video/mp4"}
MANIFEST_NAME = "manifest.json"


def object_prefix(room: str, recording_id: str) -> str:
    return f"recordings/{room}/{recording_id}/"


def first_timestamp(streams: dict[str, dict[int, ChunkRecord]]) -> float | None:
    """The client clock (epoch ms) when a participant's media began: the earliest chunk timestamp it sent."""
    stamps = [c.timestamp for chunks in streams.values() for c in chunks.values() if c.timestamp is not None]
    return min(stamps) if stamps else None


def start_offsets(first_stamps: dict[str, float | None]) -> dict[str, float | None]:
    """Seconds from the recording's first media to each participant's first media."""
    known = [ts for ts in first_stamps.values() if ts is not None]
    origin = min(known) if known else None
    return {pid: (None if ts is None or origin is None else round((ts - origin) / 1000.0, 3)) for pid, ts in first_stamps.items()}


def build_manifest(rec: dict[str, str], plan: dict[str, dict[str, dict[int, ChunkRecord]]],
                   outputs: dict[str, dict], errors: dict[str, str]) -> dict:
    firsts = {pid: first_timestamp(streams) for pid, streams in plan.items()}
    offsets = start_offsets(firsts)
    participants = {}
    for pid, streams in sorted(plan.items()):
        participants[pid] = {
            "error": errors.get(pid),
            "firstTimestamp": iso(firsts[pid] / 1000.0) if firsts[pid] is not None else None,
            "startOffsetSeconds": offsets[pid],
            "streams": {kind: stream_summary(chunks) for kind, chunks in sorted(streams.items())},
            "output": outputs.get(pid),
        }
    return {
        "version": 1,
        "recordingId": rec["recordingId"],
        "room": rec["room"],
        "format": rec.get("format", "webm"),
        "metadata": json.loads(rec.get("metadata") or "{}"),
        "startedAt": iso(float(rec["startedAt"])) if rec.get("startedAt") else None,
        "stoppedAt": iso(float(rec["stoppedAt"])) if rec.get("stoppedAt") else None,
        "finalizedAt": iso(time.time()),
        "participants": participants,
        "outputs": [outputs[pid] for pid in sorted(outputs)],
    }

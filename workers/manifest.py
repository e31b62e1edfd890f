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


def media_origin_ms(streams: dict[str, dict[int, ChunkRecord]]) -> float | None:
    """Client clock (epoch ms) at the participant's container time 0: each stream's first chunk holds the
    header and the media from 0, and its timestamp says when that media began; the earliest stream wins."""
    stamps = [chunks[min(chunks)].timestamp for chunks in streams.values() if chunks]
    known = [ts for ts in stamps if ts is not None]
    return min(known) if known else None


def start_offsets(plan: dict[str, dict[str, dict[int, ChunkRecord]]], outputs: dict[str, dict]) -> dict[str, float | None]:
    """Seconds from the recording's first frame (any participant) to each output's first frame.

    An output starts at its own first frame, which was `mediaStartSeconds` into its container; add that to
    the client clock of container time 0, and the earliest of those is the recording's start.
    """
    first_frames: dict[str, float | None] = {}
    for pid, streams in plan.items():
        origin = media_origin_ms(streams)
        media_start = (outputs.get(pid) or {}).get("mediaStartSeconds", 0.0)
        first_frames[pid] = None if origin is None else origin + media_start * 1000.0
    known = [ms for ms in first_frames.values() if ms is not None]
    start = min(known) if known else None
    return {pid: None if ms is None or start is None else round((ms - start) / 1000.0, 3) for pid, ms in first_frames.items()}


def build_manifest(rec: dict[str, str], plan: dict[str, dict[str, dict[int, ChunkRecord]]],
                   outputs: dict[str, dict], errors: dict[str, str]) -> dict:
    offsets = start_offsets(plan, outputs)
    participants = {}
    for pid, streams in sorted(plan.items()):
        origin = media_origin_ms(streams)
        participants[pid] = {
            "error": errors.get(pid),
            "clientStartTimestamp": iso(origin / 1000.0) if origin is not None else None,
            "mediaStartSeconds": (outputs.get(pid) or {}).get("mediaStartSeconds"),
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
        "alignment": "play each output starting startOffsetSeconds after the recording's first frame",
        "participants": participants,
        "outputs": [outputs[pid] for pid in sorted(outputs)],
    }

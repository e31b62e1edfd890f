"""manifest.json: everything a player or an archive needs to line participants up and trust the files.

It stores object keys, never URLs (URLs expire; the status and webhooks mint them when read or sent). Every
time in it comes from a client clock through workers.clock, so no participant's clock can make it fail.
"""
from __future__ import annotations

import json
import math
import time
from typing import Iterable

from workers.chunk_index import ChunkRecord
from workers.clock import epoch, iso, normalize_ms
from workers.pause import parse_pauses
from workers.records import RecordingHash, StoredOutput

CONTENT_TYPES = {"webm": "video/webm", "mkv": "video/x-matroska", "mp4": "video/mp4"}
MANIFEST_NAME = "manifest.json"
CLOCK_TRUST_SECONDS = 300.0
"""A client clock whose estimated offset from the server's is within this is trusted as it is (it is more
precise than arrival times); beyond it — a wrong clock, or seconds sent as milliseconds — the offset is applied."""
Origins = dict[str, float | None]
"""participantId → media_origin_ms of its streams, for every participant that sent a chunk."""


def object_prefix(room: str, recording_id: str) -> str:
    return f"recordings/{room}/{recording_id}/"


def media_origin_ms(firsts: Iterable[ChunkRecord | None]) -> float | None:
    """Client clock (epoch ms) at the participant's container time 0, from each of its streams' first chunk: that
    chunk holds the header and the media from 0, and its timestamp says when that media began; the earliest stream
    wins."""
    stamps = [normalize_ms(first.timestamp) for first in firsts if first is not None]
    known = [ts for ts in stamps if ts is not None]
    return min(known) if known else None


def recording_window_ms(rec: RecordingHash) -> tuple[float, float]:
    """Server epoch ms in which the recording's media can begin: from its start to its stop (now while it runs),
    widened by CLOCK_TRUST_SECONDS for a recorder started a little early or a late stop."""
    started, stopped = epoch(rec.get("startedAt")), epoch(rec.get("stoppedAt")) or time.time()
    slack = CLOCK_TRUST_SECONDS * 1000.0
    return (started * 1000.0 - slack if started else -math.inf), stopped * 1000.0 + slack


def first_frame_ms(origin: float, offset: float | None, window: tuple[float, float]) -> float:
    """Server-time estimate of a participant's container time 0. The offset is a least over chunks, so one absurd
    timestamp of that participant's can make it absurd too: the preferred estimate (corrected when the clock is
    far off, else the clock as it is) is used when it lies in the recording's window, else the other one, else
    the preferred one clamped into the window. So only that participant's own alignment can suffer."""
    corrected = origin + offset * 1000.0 if offset is not None else None
    far_off = offset is not None and abs(offset) > CLOCK_TRUST_SECONDS
    candidates = [c for c in ((corrected, origin) if far_off else (origin, corrected)) if c is not None]
    low, high = window
    for candidate in candidates:
        if low <= candidate <= high:
            return candidate
    return min(max(candidates[0], low), high)


def start_offsets(origins: Origins, outputs: dict[str, StoredOutput], clock_offsets: dict[str, float | None],
                  window: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, float | None]:
    """Seconds from the recording's first frame (any participant) to each output's first frame.

    An output starts at its own first frame, `mediaStartSeconds` into its container; add that to the client
    clock of container time 0 (corrected by the clock's estimated offset when it is far off, and kept inside
    the recording's window: see first_frame_ms), and the earliest of those is the recording's start.
    """
    first_frames: dict[str, float | None] = {}
    for pid, origin in origins.items():
        output = outputs.get(pid)
        media_start = output.media_start_seconds if output else 0.0
        first_frames[pid] = None if origin is None else (
            first_frame_ms(origin, clock_offsets.get(pid), window) + media_start * 1000.0)
    known = [ms for ms in first_frames.values() if ms is not None]
    start = min(known) if known else None
    return {pid: None if ms is None or start is None else round((ms - start) / 1000.0, 3) for pid, ms in first_frames.items()}


def build_manifest(rec: RecordingHash, origins: Origins, outputs: dict[str, StoredOutput], entries: dict[str, dict]
                   ) -> dict:
    """origins: start_offsets'; entries: the status' participants.<pid> (error, clockOffsetSeconds, one summary per
    stream type)."""
    offsets = start_offsets(origins, outputs, {pid: e.get("clockOffsetSeconds") for pid, e in entries.items()},
                            recording_window_ms(rec))
    participants = {}
    for pid in sorted(set(origins) | set(entries)):
        entry = entries.get(pid, {})
        origin = origins.get(pid)
        output = outputs.get(pid)
        participants[pid] = {
            "error": entry.get("error"),
            "clientStartTimestamp": iso(origin / 1000.0) if origin is not None else None,
            "clockOffsetSeconds": entry.get("clockOffsetSeconds"),
            "mediaStartSeconds": output.media_start_seconds if output else None,
            "startOffsetSeconds": offsets.get(pid),
            "streams": {stream_type: entry[stream_type] for stream_type in ("audio", "video") if stream_type in entry},
            "gaps": entry.get("gaps", []),  # spans without media (WebRTC reconnects), as in the status
            "output": output.to_json() if output else None,
        }
    return {
        "version": 1,
        "recordingId": rec["recordingId"],
        "room": rec["room"],
        "format": rec.get("format", "webm"),
        "metadata": json.loads(rec.get("metadata") or "{}"),
        "startedAt": iso(epoch(rec.get("startedAt"))),
        "stoppedAt": iso(epoch(rec.get("stoppedAt"))),
        "pauses": [p.body() for p in parse_pauses(rec.get("pauses"))],
        "finalizedAt": iso(time.time()),
        "alignment": "play each output starting startOffsetSeconds after the recording's first frame",
        "participants": participants,
        "outputs": [outputs[pid].to_json() for pid in sorted(outputs)],
    }

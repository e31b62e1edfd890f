"""Bring a recording back from its staged chunks after Redis lost it (a restart without persistence, a flush).

Staging (local disk or the object store, whichever STAGING_BACKEND names) holds everything that matters: each
chunk is named by sequence and content hash, and a descriptor written at start names the room and format. Client timestamps are not on disk, so a rebuilt recording's participants
align by media alone.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

from workers.chunk_index import ChunkRecord
from workers.media.chunk_stream import HEADER_PROBE_BYTES
from workers.media.container import starts_header
from workers.records import RecordingHash
from workers import keys
from workers.errors import NotFound
from workers.staging import CHUNK_NAME, Staging
from workers.state import RecordingStore


@dataclass
class RebuildReport:
    recreated: bool = False
    restored: int = 0
    already_indexed: int = 0
    corrupt: list[str] = field(default_factory=list)
    """Files whose bytes no longer match the hash in their name: left out, reported."""


def descriptor(rec: RecordingHash) -> dict:
    """What staging keeps of a recording beside its chunks, from its Redis hash: room, format, metadata, start and
    pauses (rewritten at each pause and resume). Participants need no entry: every chunk's name carries its own."""
    return {"recordingId": rec["recordingId"], "room": rec["room"], "format": rec.get("format") or "webm",
            "metadata": json.loads(rec.get("metadata") or "{}"), "startedAt": float(rec.get("startedAt") or 0) or None,
            "pauses": rec.get("pauses") or ""}


def rebuild(store: RecordingStore, staging: Staging, recording_id: str) -> RebuildReport:
    """Recreate the recording (as failed, ready to requeue) if Redis forgot it, and index every staged chunk."""
    report = RebuildReport()
    if store.get(recording_id) is None:
        facts = staging.recall(recording_id)
        if not facts or not facts.get("room"):
            raise NotFound(f"no recording {recording_id} in Redis, and staging has no record of its room")
        report.recreated = store.restore(recording_id, facts["room"], facts.get("format") or "webm",
                                         facts.get("metadata") or {}, facts.get("startedAt"))
        if report.recreated and isinstance(facts.get("pauses"), str) and facts["pauses"]:
            pauses = facts["pauses"]
            if pauses.endswith(":"):  # lost while paused: closed where the rebuilt recording stops, as stop does
                stopped = store.redis.hget(keys.recording(recording_id), "stoppedAt")
                pauses += stopped.decode() if isinstance(stopped, bytes) else stopped
            store.redis.hset(keys.recording(recording_id), "pauses", pauses)
    for found in staging.scan(recording_id):
        with staging.open_chunk(recording_id, found.participant_id, found.stream_type, found.name) as handle:
            data = handle.read()  # one chunk (MAX_CHUNK_BYTES at most), never the recording
        digest = hashlib.sha256(data).hexdigest()
        named = CHUNK_NAME.fullmatch(found.name).group(2)  # type: ignore[union-attr]
        if not digest.startswith(named):
            report.corrupt.append(str(found.path))
            continue
        record = ChunkRecord(digest=digest, size=len(data), timestamp=None, name=found.name)
        fresh = store.index.restore(recording_id, found.participant_id, found.stream_type, found.sequence, record,
                                    header=starts_header(data[:HEADER_PROBE_BYTES]), now=time.time())
        if fresh:
            report.restored += 1
        else:
            report.already_indexed += 1
    return report

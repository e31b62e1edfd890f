"""The status body of docs/api.md, built from Redis with bounded reads (its cost does not grow with chunks)."""
from __future__ import annotations

import json
from typing import Callable

from workers.chunk_index import StreamFacts
from workers.clock import epoch
from workers.live.state import LiveStates
from workers.pause import parse_pauses
from workers.records import RecordingHash, parse_outputs
from workers.state import RecordingStore, iso
from workers.webhooks.outbox import list_deliveries
from workers.webrtc.claims import Gaps

UrlFor = Callable[[str], "str | None"]



def _json(raw: str | None, default):
    return json.loads(raw) if raw else default


def clock_offset_seconds(facts: list[StreamFacts]) -> float | None:
    """A participant's estimated client clock offset: server arrival minus client timestamp, least over its
    streams (a chunk is posted after its media, so this includes the shortest delay: an upper bound)."""
    skews = [f.skew_ms for f in facts if f.skew_ms is not None]
    return round(min(skews) / 1000.0, 3) if skews else None


def participant_entries(store: RecordingStore, recording_id: str, errors: dict[str, str],
                        only: str | None = None, rec: RecordingHash | None = None) -> dict[str, dict]:
    """participants.<pid>: error, clockOffsetSeconds, one summary per stream type, and gaps (pass rec when the
    caller has just read the recording hash; else it is read here for the gaps' pauses)."""
    streams = [s for s in store.streams(recording_id) if only is None or s[0] == only]
    facts = store.index.facts(recording_id, streams)
    entries: dict[str, dict] = {}
    for (participant_id, stream_type), fact in facts.items():
        entry = entries.setdefault(participant_id, {"error": errors.get(participant_id)})
        entry[stream_type] = fact.body()
    for participant_id in entries:
        mine = [f for (pid, _stream_type), f in facts.items() if pid == participant_id]
        entries[participant_id]["clockOffsetSeconds"] = clock_offset_seconds(mine)
    for participant_id, message in errors.items():
        if only is None or participant_id == only:
            entries.setdefault(participant_id, {"error": message})
    rec = rec if rec is not None else store.get(recording_id)
    for participant_id, gaps in Gaps.read(store.redis, recording_id, rec).items():  # WebRTC reconnects (README)
        if participant_id in entries and gaps:
            entries[participant_id]["gaps"] = gaps
    return entries


def _participants(store: RecordingStore, recording_id: str, rec: RecordingHash, errors: dict,
                  only: str | None) -> dict[str, dict]:
    """Live from the stream facts, or frozen in the hash once beat compacted the recording."""
    if rec.get("compactedAt"):
        frozen = _json(rec.get("participantsSummary"), {})
        return {pid: entry for pid, entry in frozen.items() if only is None or pid == only}
    return participant_entries(store, recording_id, errors, only, rec)


NO_OUTPUT = "no participant produced an output"
"""How finalize's error begins when every participant failed; it goes on with each one's id and reason."""


def _error_seen_by(error: str | None, errors: dict[str, str], only: str | None) -> str | None:
    """The recording's error as a participant may see it: the reasons of others name them, so only its own."""
    if only is None or not error or not error.startswith(NO_OUTPUT):
        return error
    return f"{NO_OUTPUT}: {errors[only]}" if only in errors else NO_OUTPUT


def build_status(store: RecordingStore, recording_id: str, url_for: UrlFor | None = None,
                 rec: RecordingHash | None = None, only: str | None = None) -> dict | None:
    """The full status body, or None for an unknown recording. url_for mints download URLs (never stored);
    pass rec when the caller has just read the recording hash; `only` limits participants and outputs to one
    participant (what a participant's own token may see)."""
    rec = rec if rec is not None else store.get(recording_id)
    if rec is None:
        return None
    errors: dict = _json(rec.get("participantErrors"), {})
    outputs = [output.to_json() | {
        "url": url_for(output.key) if url_for else None,
        "thumbnailUrl": url_for(output.thumbnail_key) if url_for and output.thumbnail_key else None,
    } for pid, output in sorted(parse_outputs(rec.get("outputs")).items()) if only is None or pid == only]
    return {
        "recordingId": recording_id,
        "room": rec["room"],
        "state": rec["state"],
        "progress": float(rec.get("progress") or 0),
        "format": rec.get("format", "webm"),
        "startedAt": iso(epoch(rec.get("startedAt"))),
        "stoppedAt": iso(epoch(rec.get("stoppedAt"))),
        "stopReason": rec.get("stopReason") or None,
        "completedAt": iso(epoch(rec.get("completedAt"))),
        "error": _error_seen_by(rec.get("error") or None, errors, only),
        "upload": {"bytesSent": int(rec["bytesSent"]), "bytesTotal": int(rec["bytesTotal"])} if rec.get("bytesTotal") else None,
        "metadata": _json(rec.get("metadata"), {}),
        "taskId": rec.get("taskId") or None,
        "pauses": [p.body() for p in parse_pauses(rec.get("pauses"))],
        "participants": _participants(store, recording_id, rec, errors, only),
        "outputs": outputs,
        "webhooks": [d.public() for d in list_deliveries(store.redis, recording_id)] if only is None else [],
        "live": LiveStates(store.redis).status(recording_id),
    }

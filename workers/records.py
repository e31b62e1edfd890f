"""The typed records a recording is made of in Redis: its hash (RecordingHash) and each uploaded output (StoredOutput).

Both travel as JSON (the hash's `outputs` field, the status body, manifest.json), so their wire shapes are fixed by
the API; these types only name the fields in code, so finalize, manifest, status and purge stop passing ~17-key
dicts whose keys are checked nowhere. Wire names are camelCase, attribute names snake_case; to_json/from_json are
the one place that maps them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, TypedDict


class RecordingHash(TypedDict, total=False):
    """The recording's Redis hash as read: every value a string (numbers as repr, JSON fields as JSON text)."""

    recordingId: str
    room: str
    state: str
    format: str
    metadata: str
    """JSON object the host passed at start."""
    startedAt: str
    stoppedAt: str
    completedAt: str
    updatedAt: str
    acceptUntil: str
    """Epoch seconds until which late chunks are still accepted (the grace window)."""
    progress: str
    bytesSent: str
    bytesTotal: str
    taskId: str
    error: str
    pauses: str
    """JSON list of [pausedAt, resumedAt | null]."""
    outputs: str
    """JSON list of StoredOutput.to_json()."""
    participantErrors: str
    """JSON object participantId → why that participant has no output."""
    stopReason: str
    """host, idle, max_duration or operator."""
    lastChunkAt: str
    """Epoch seconds of the last accepted chunk (beat's idle stop)."""
    compactedAt: str
    """Epoch seconds when a long-completed recording was reduced to its summary."""
    participantsSummary: str
    """JSON of the participants' status entries, frozen at compaction."""


@dataclass(frozen=True)
class OutputThumbnail:
    """The poster uploaded beside an output."""

    width: int
    height: int
    at_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "atSeconds": self.at_seconds}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> OutputThumbnail:
        return cls(width=body["width"], height=body["height"], at_seconds=body["atSeconds"])


@dataclass(frozen=True)
class StoredOutput:
    """One participant's uploaded output, as kept in the hash's `outputs` and manifest.json (keys, never URLs:
    URLs expire, so the status and webhooks mint them when read or sent)."""

    participant_id: str
    format: str
    bytes: int
    duration_seconds: float
    provider: str
    key: str
    sha256: str | None
    """Hex SHA-256 of the whole file (batch outputs); None for a live output, which has `checksum` instead."""
    method: str
    """"copy", "transcode" or "mixed": how the output's tracks were produced."""
    tracks: list[dict[str, Any]]
    segments: int
    media_start_seconds: float
    """Container time of the first frame, which the output was moved back to 0 from."""
    timestamp_repairs: int
    dropped_packets: int
    thumbnail_key: str | None = None
    thumbnail: OutputThumbnail | None = None
    aligned: bool = False
    """True once finalize placed the output on the recording's timeline (start_offset_seconds is then set)."""
    start_offset_seconds: float | None = None
    """Seconds from the recording's first frame (any participant) to this output's first one; None: unknown."""
    paused_seconds_cut: float = 0.0
    """Media the client recorded inside pauses, cut out at finalize (listed only when there was some)."""
    checksum: dict[str, Any] | None = None
    """Live outputs: {algorithm: sha256-parts, partSize, parts, composite} (workers/live/checksum.py)."""

    def aligned_at(self, offset: float | None) -> StoredOutput:
        """This output placed on the recording's timeline."""
        return replace(self, aligned=True, start_offset_seconds=offset)

    def object_keys(self) -> list[str]:
        """Every stored object this output names (the media and its poster)."""
        return [k for k in (self.key, self.thumbnail_key) if k]

    def to_json(self) -> dict[str, Any]:
        """The wire shape (camelCase, in the order clients have always seen)."""
        body: dict[str, Any] = {
            "participantId": self.participant_id, "format": self.format, "bytes": self.bytes,
            "durationSeconds": self.duration_seconds, "provider": self.provider, "key": self.key,
            "sha256": self.sha256, "method": self.method, "tracks": self.tracks, "segments": self.segments,
            "mediaStartSeconds": self.media_start_seconds, "timestampRepairs": self.timestamp_repairs,
            "droppedPackets": self.dropped_packets, "thumbnailKey": self.thumbnail_key,
            "thumbnail": self.thumbnail.to_json() if self.thumbnail else None,
        }
        if self.aligned:
            body["startOffsetSeconds"] = self.start_offset_seconds
        if self.paused_seconds_cut:
            body["pausedSecondsCut"] = self.paused_seconds_cut
        if self.checksum:
            body["checksum"] = self.checksum
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StoredOutput:
        """Read back what to_json wrote (URL fields a status added are ignored)."""
        thumbnail = body.get("thumbnail")
        return cls(
            participant_id=body["participantId"], format=body.get("format", ""), bytes=body.get("bytes", 0),
            duration_seconds=body.get("durationSeconds") or 0.0, provider=body.get("provider", ""),
            key=body["key"], sha256=body.get("sha256", ""), method=body.get("method", "copy"),
            tracks=body.get("tracks") or [], segments=body.get("segments", 0),
            media_start_seconds=body.get("mediaStartSeconds") or 0.0,
            timestamp_repairs=body.get("timestampRepairs", 0), dropped_packets=body.get("droppedPackets", 0),
            thumbnail_key=body.get("thumbnailKey"),
            thumbnail=OutputThumbnail.from_json(thumbnail) if thumbnail else None,
            aligned="startOffsetSeconds" in body, start_offset_seconds=body.get("startOffsetSeconds"),
            paused_seconds_cut=body.get("pausedSecondsCut") or 0.0, checksum=body.get("checksum"),
        )


def outputs_json(outputs: dict[str, StoredOutput]) -> list[dict[str, Any]]:
    """The hash's `outputs` field: one body per participant, sorted by participant id."""
    return [outputs[pid].to_json() for pid in sorted(outputs)]


def parse_outputs(raw: str | None) -> dict[str, StoredOutput]:
    """The hash's `outputs` field by participant id."""
    return {o.participant_id: o for o in (StoredOutput.from_json(body) for body in json.loads(raw or "[]"))}

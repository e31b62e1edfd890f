"""Where each participant's live output stands, one small JSON per participant in one Redis hash.

The media and the cue points live in files on the worker's disk (workers/live/output.py); Redis holds only
positions and lengths, so a step that died half-way is undone by truncating to them, and a state that no
longer matches the files (another node, a Redis restart) sends finalize down the batch path.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import redis

from workers import keys
from workers.live.mp4_output import Mp4Progress
from workers.live.transcode import TranscodeCarry
from workers.live.window import LiveTracks


@dataclass
class Cursor:
    """Where one stream of the participant stands."""

    sequence: int = 0
    """The chunk where the next unread Cluster begins."""
    offset: int = 0
    """Byte offset of that Cluster in its chunk."""
    header: int = 0
    """Bytes of the stream's header (before its first Cluster), counted from the stream's first chunk."""
    first: int = 0
    """The stream's first sequence, which holds its header (0, or 1 for clients that count from 1)."""
    position: int = -1
    """The last sequence whose every byte is in the output."""
    skip: int = 0
    """Bytes from the next Cluster's start to its first packet not yet in the output (several streams: a window
    ends at a time, which may fall inside a Cluster)."""
    run: int | None = None
    """The header chunk of the recorder run being folded, when a restarted recorder began one (None: `first`)."""
    run_offset: float | None = 0.0
    """Seconds the run's media is moved by, as batch moves a later segment (None: not known before its first
    window, which reads where the run's media begins)."""
    ended: float = 0.0
    """Where the runs before this one ended on the output's timeline (batch's `end` across segments)."""
    lane_ends: dict[str, float | None] = field(default_factory=dict)
    """Each track's end in this run so far (track key → seconds; None: unsure), from which the next run starts."""
    runs: int = 1
    """Recorder runs folded (batch's `segments`)."""
    clock: dict | None = None
    """The run's timeline repairs so far (workers/media/timeline.py SegmentClock.snapshot), carried from window to
    window; None when not carried (a state from before they were): then a window that needs a repair goes to batch."""
    run_bytes: int = 0
    """Bytes of the run's chunks before `sequence`: where a window's bytes lie in the run."""
    repairs: int = 0
    """Timeline repairs made so far (batch's timestampRepairs)."""

    @property
    def run_first(self) -> int:
        """The sequence holding the header of the run being folded."""
        return self.first if self.run is None else self.run

    def to_json(self) -> list:
        return [self.sequence, self.offset, self.header, self.first, self.position, self.skip, self.run,
                self.run_offset, self.ended, self.lane_ends, self.runs, self.clock, self.run_bytes, self.repairs]

    @classmethod
    def from_json(cls, data: list) -> Cursor:
        return cls(*data)


@dataclass
class LiveState:
    streams: dict[str, Cursor] = field(default_factory=dict)
    """Stream type → cursor, in the batch muxer's source order (audio first)."""
    bytes: int = 0
    cue_bytes: int = 0
    end_seconds: float = 0.0
    tracks: LiveTracks = field(default_factory=LiveTracks)
    infos: list[dict] = field(default_factory=list)
    """The batch muxer's TrackInfo of each output track, packets counted over every window."""
    windows: int = 0
    updated_at: float = 0.0
    failed: str | None = None
    """Why this participant is left to the batch path (set once, never cleared)."""
    closed: bool = False
    """The file got its Cues and header: it is never written again (a retry uploads it as it is)."""
    host: str = ""
    """The node whose disk holds the files."""
    transcode: TranscodeCarry | None = None
    """`format: mp4`: each window is transcoded to H.264/AAC (workers/live/transcode.py), and what carries over."""
    poster: dict | None = None
    """The poster taken while recording, next to the output (workers/live/step.py): the offset and width it was
    made for (the settings), its picture's width, height and time, and the JPEG's bytes, checked before reuse."""
    mp4: Mp4Progress | None = None
    """`format: mp4`: the MP4 written while recording (workers/live/mp4_output.py); None when it is not (copied
    tracks, or it failed): then stop copies the live Matroska into an MP4 as before."""

    @property
    def output_fmt(self) -> str:
        """The live output's container: the remuxed windows' (WebM or Matroska), Matroska when transcoded."""
        return "matroska" if self.transcode is not None else self.tracks.fmt

    @property
    def position(self) -> int:
        """The last sequence every stream's output holds (-1 before the first window)."""
        return min((cursor.position for cursor in self.streams.values()), default=-1)

    def to_json(self) -> str:
        return json.dumps({
            "streams": {t: c.to_json() for t, c in self.streams.items()}, "bytes": self.bytes, "cueBytes": self.cue_bytes, "endSeconds": self.end_seconds,
            "tracks": self.tracks.to_json(), "infos": self.infos, "windows": self.windows,
            "updatedAt": self.updated_at, "failed": self.failed, "closed": self.closed, "host": self.host,
            "transcode": self.transcode.to_json() if self.transcode is not None else None, "poster": self.poster,
            "mp4": self.mp4.to_json() if self.mp4 is not None else None,
        })

    @classmethod
    def from_json(cls, raw: str | bytes) -> LiveState:
        data = json.loads(raw)
        return cls({t: Cursor.from_json(c) for t, c in data["streams"].items()}, data["bytes"],
                   data["cueBytes"], data["endSeconds"], LiveTracks.from_json(data["tracks"]), data["infos"],
                   data["windows"], data["updatedAt"], data["failed"], data["closed"], data["host"],
                   TranscodeCarry.from_json(data["transcode"]) if data.get("transcode") else None,
                   data.get("poster"), Mp4Progress.from_json(data["mp4"]) if data.get("mp4") else None)


class LiveStates:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def get(self, recording_id: str, participant_id: str) -> LiveState | None:
        raw = self.redis.hget(keys.live_state(recording_id), participant_id)
        return LiveState.from_json(raw) if raw else None

    def all(self, recording_id: str) -> dict[str, LiveState]:
        raw = self.redis.hgetall(keys.live_state(recording_id))
        return {k.decode(): LiveState.from_json(v) for k, v in raw.items()}

    def put(self, recording_id: str, participant_id: str, state: LiveState) -> None:
        state.updated_at = time.time()
        self.redis.hset(keys.live_state(recording_id), participant_id, state.to_json())

    def fail(self, recording_id: str, participant_id: str, reason: str) -> None:
        self.put(recording_id, participant_id, LiveState(failed=reason))

    def status(self, recording_id: str, now: float | None = None) -> dict | None:
        """The status's `live` entry: the lowest position over participants still live, and how long ago the
        oldest of them last advanced (None when nothing runs live)."""
        states = [s for s in self.all(recording_id).values() if s.failed is None and s.windows]
        if not states:
            return None
        now = time.time() if now is None else now
        return {"position": min(s.position for s in states),
                "lagSeconds": round(max(0.0, now - min(s.updated_at for s in states)), 3)}

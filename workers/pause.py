"""Pause and resume: one atomic script each; the recording hash keeps its pauses as "<pausedAt>:<resumedAt>;…".

A pause only changes state and the list: chunks keep arriving (202, paused: true) so no sequence goes missing,
and finalize reads the spans to leave the paused media out of the one file per participant.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from workers import keys
from workers.chunk_index import ChunkRecord
from workers.clock import iso, normalize_ms
from workers.media.cuts import StreamCuts, chunk_interval_ms, client_spans, clock_offset_ms
from workers.records import RecordingHash

MAX_PAUSES = 1000
"""Pauses one recording may hold; the list is read whole by status and finalize, so it is bounded."""

_PAUSE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found'} end
if state ~= 'recording' then return {'invalid_state', state} end
local pauses = redis.call('HGET', KEYS[1], 'pauses') or ''
local _, count = string.gsub(pauses, ':', '')
if count >= tonumber(ARGV[2]) then return {'too_many', state} end
if pauses ~= '' then pauses = pauses .. ';' end
redis.call('HSET', KEYS[1], 'state', 'paused', 'pauses', pauses .. ARGV[1] .. ':', 'updatedAt', ARGV[1])
return {'paused', 'paused'}
"""

_RESUME = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found'} end
if state ~= 'paused' then return {'invalid_state', state} end
local pauses = redis.call('HGET', KEYS[1], 'pauses') or ''
redis.call('HSET', KEYS[1], 'state', 'recording', 'pauses', pauses .. ARGV[1], 'updatedAt', ARGV[1])
return {'recording', 'recording'}
"""


@dataclass(frozen=True)
class Pause:
    """One paused span in server epoch seconds; resumed_at is None while it lasts."""

    paused_at: float
    resumed_at: float | None

    def body(self) -> dict:
        return {"pausedAt": iso(self.paused_at), "resumedAt": iso(self.resumed_at)}


def parse_pauses(raw: str | None) -> list[Pause]:
    """The hash field back as spans (empty field: no pause)."""
    out = []
    for item in (raw or "").split(";"):
        if item:
            start, _, end = item.partition(":")
            out.append(Pause(float(start), float(end) if end else None))
    return out


def paused_seconds(pauses: list[Pause], until: float) -> float:
    """Total paused time up to `until` (an open pause counts up to it)."""
    return sum(max(0.0, min(p.resumed_at if p.resumed_at is not None else until, until) - p.paused_at)
               for p in pauses if p.paused_at < until)


def recorded_seconds(rec: RecordingHash, now: float | None = None) -> float:
    """Seconds recorded so far, paused time not counted: what MAX_RECORDING_SECONDS is compared with."""
    now = time.time() if now is None else now
    end = float(rec["stoppedAt"]) if rec.get("stoppedAt") else now
    start = float(rec.get("startedAt") or end)
    return max(0.0, end - start - paused_seconds(parse_pauses(rec.get("pauses")), end))


def stream_cuts(pauses: list[Pause], streams: dict[str, dict[int, ChunkRecord]],
                skews_ms: dict[str, float | None]) -> dict[str, StreamCuts]:
    """What finalize cuts from one participant's streams (type → chunks; type → least arrival − timestamp):
    the pauses on the participant's clock, one offset for all its streams so they stay in sync."""
    if not pauses:
        return {}
    stamps = {stream_type: {seq: ms for seq, record in chunks.items()
                            if (ms := normalize_ms(record.timestamp)) is not None}
              for stream_type, chunks in streams.items()}
    intervals = {stream_type: chunk_interval_ms(sorted(found.items())) for stream_type, found in stamps.items()}
    offsets = [clock_offset_ms(skew, intervals[stream_type]) for stream_type, skew in skews_ms.items()
               if skew is not None and stream_type in intervals]
    if not offsets:
        return {}
    spans = tuple(client_spans([(p.paused_at, p.resumed_at) for p in pauses], min(offsets)))
    return {stream_type: StreamCuts(spans, stamps[stream_type], intervals[stream_type]) for stream_type in streams}


class PauseControl:
    """Moves a recording between recording and paused; returns (outcome, state)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pause = client.register_script(_PAUSE)
        self._resume = client.register_script(_RESUME)

    def pause(self, recording_id: str, now: float | None = None) -> tuple[str, str | None]:
        """paused, not_found, invalid_state or too_many."""
        now = time.time() if now is None else now
        return _pair(self._pause(keys=[keys.recording(recording_id)], args=[repr(now), MAX_PAUSES]))

    def resume(self, recording_id: str, now: float | None = None) -> tuple[str, str | None]:
        """recording, not_found or invalid_state."""
        now = time.time() if now is None else now
        return _pair(self._resume(keys=[keys.recording(recording_id)], args=[repr(now)]))


def _pair(out: list) -> tuple[str, str | None]:
    values = [v.decode() if isinstance(v, bytes) else v for v in out]
    return values[0], values[1] if len(values) > 1 else None

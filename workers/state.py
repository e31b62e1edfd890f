"""Recording state in Redis. Every transition that must not race is one Lua script (atomic on the server)."""
from __future__ import annotations

import json
import time
from enum import Enum
from typing import cast

import redis

from workers import keys
from workers.chunk_index import ChunkIndex, ChunkRecord, RateCheck
from workers.clock import iso
from workers.records import RecordingHash

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "ChunkRecord", "RecordingStore", "State", "iso"]


class State(str, Enum):
    RECORDING = "recording"
    PAUSED = "paused"
    FINALIZING = "finalizing"
    MUXING = "muxing"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETING = "deleting"


ACTIVE_STATES = (State.RECORDING, State.PAUSED)
"""A room with a recording in one of these cannot start another."""
FINAL_STATES = (State.COMPLETED, State.FAILED)


_START = """
local current = redis.call('GET', KEYS[1])
if current then
  local state = redis.call('HGET', KEYS[3] .. current, 'state')
  if state == 'recording' or state == 'paused' then return {0, current} end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[4] then redis.call('ZADD', KEYS[4], redis.call('HGET', KEYS[2], 'startedAt'), ARGV[1]) end
if KEYS[5] then redis.call('ZADD', KEYS[5], redis.call('HGET', KEYS[2], 'startedAt'), ARGV[1]) end
return {1, ARGV[1]}
"""

_STOP = """
local current = redis.call('GET', KEYS[1])
if not current then return nil end
local rec = KEYS[2] .. current
local state = redis.call('HGET', rec, 'state')
if state == 'recording' or state == 'paused' then
  if state == 'paused' then  -- stop closes the open pause (workers/pause.py keeps "<pausedAt>:<resumedAt>;...")
    redis.call('HSET', rec, 'pauses', (redis.call('HGET', rec, 'pauses') or '') .. ARGV[1])
  end
  redis.call('HSET', rec, 'state', 'finalizing', 'stoppedAt', ARGV[1], 'acceptUntil', ARGV[2],
             'taskId', ARGV[3], 'updatedAt', ARGV[1], 'progress', '0', 'stopReason', ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[2], current)
  redis.call('ZREM', KEYS[4], current)
  return {current, 'finalizing', ARGV[3], 1}
end
return {current, state, redis.call('HGET', rec, 'taskId') or '', 0}
"""

_BEGIN_MUX = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found'} end
if state == 'finalizing' then
  local until_ = tonumber(redis.call('HGET', KEYS[1], 'acceptUntil'))
  if tonumber(ARGV[1]) < until_ then return {'wait', tostring(until_)} end
  redis.call('HSET', KEYS[1], 'state', 'muxing', 'updatedAt', ARGV[1])
  return {'muxing'}
end
return {state}
"""


class RecordingStore:
    """Reads and writes recordings, streams and chunk records; knows nothing of HTTP or Celery."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._start = client.register_script(_START)
        self._stop = client.register_script(_STOP)
        self.index = ChunkIndex(client)
        self._begin_mux = client.register_script(_BEGIN_MUX)

    # Lifecycle -------------------------------------------------------------

    def start(self, room: str, recording_id: str, fmt: str, metadata: dict, now: float | None = None) -> tuple[bool, str]:
        """Create a recording unless the room already records; returns (created, recording id)."""
        now = time.time() if now is None else now
        fields = {
            "recordingId": recording_id, "room": room, "state": State.RECORDING.value, "format": fmt,
            "metadata": json.dumps(metadata), "startedAt": repr(now), "updatedAt": repr(now), "progress": "0",
        }
        flat = [item for pair in fields.items() for item in pair]
        created, rid = self._start(
            keys=[keys.room_current(room), keys.recording(recording_id), keys.recording_prefix(),
                  keys.room_recordings(room), keys.active_recordings()],
            args=[recording_id, *flat],
        )
        return bool(created), rid.decode() if isinstance(rid, bytes) else rid

    def stop(self, room: str, grace_seconds: float, task_id: str, now: float | None = None) -> tuple[str, str, str, bool] | None:
        """Move the room's recording to finalizing once; returns (id, state, taskId, newly stopped)."""
        now = time.time() if now is None else now
        out = self._stop(
            keys=[keys.room_current(room), keys.recording_prefix(), keys.pending_finalize(), keys.active_recordings()],
            args=[repr(now), repr(now + grace_seconds), task_id, "host"],
        )
        if out is None:
            return None
        rid, state, tid, stopped = (v.decode() if isinstance(v, bytes) else v for v in out)
        return rid, state, tid, bool(int(stopped))

    def current(self, room: str) -> str | None:
        rid = self.redis.get(keys.room_current(room))
        return rid.decode() if rid else None

    def get(self, recording_id: str) -> RecordingHash | None:
        raw = self.redis.hgetall(keys.recording(recording_id))
        if not raw:
            return None
        return cast(RecordingHash, {k.decode(): v.decode() for k, v in raw.items()})

    def room_of(self, recording_id: str) -> str | None:
        """The recording's room, or None when it does not exist (one field: the chunk upload hot path)."""
        room = self.redis.hget(keys.recording(recording_id), "room")
        return room.decode() if room else None

    def update(self, recording_id: str, **fields: object) -> None:
        fields["updatedAt"] = repr(time.time())
        self.redis.hset(keys.recording(recording_id), mapping={k: _encode(v) for k, v in fields.items()})

    def begin_mux(self, recording_id: str, now: float | None = None) -> tuple[str, float | None]:
        """Close the grace window atomically; returns (state, wait-until) — 'wait' when grace still runs."""
        now = time.time() if now is None else now
        out = [v.decode() if isinstance(v, bytes) else v for v in self._begin_mux(keys=[keys.recording(recording_id)], args=[repr(now)])]
        return out[0], float(out[1]) if len(out) > 1 else None

    def requeue(self, recording_id: str, task_id: str) -> None:
        """An operator's retry of a failed recording: back to finalizing with a closed grace window."""
        now = time.time()
        self.update(recording_id, state=State.FINALIZING.value, error="", taskId=task_id, acceptUntil=repr(now),
                    progress="0", completedAt="", bytesSent="", bytesTotal="")
        self.redis.zadd(keys.pending_finalize(), {recording_id: now})

    def restore(self, recording_id: str, room: str, fmt: str, metadata: dict, started_at: float | None) -> bool:
        """Recreate a forgotten recording as failed (so an operator can requeue it); False if Redis has it."""
        now = time.time()
        fields = {"recordingId": recording_id, "room": room, "state": State.FAILED.value, "format": fmt,
                  "metadata": json.dumps(metadata), "startedAt": repr(started_at or now), "stoppedAt": repr(now),
                  "updatedAt": repr(now), "progress": "0",
                  "error": "rebuilt from staging after Redis lost it; requeue to finalize"}
        if not self.redis.hsetnx(keys.recording(recording_id), "recordingId", recording_id):
            return False
        self.redis.hset(keys.recording(recording_id), mapping=fields)
        self.redis.zadd(keys.room_recordings(room), {recording_id: float(fields["startedAt"])})
        return True

    def finish(self, recording_id: str, state: State, error: str | None = None) -> None:
        now = time.time()
        fields: dict[str, object] = {"state": state.value, "error": error or ""}
        if state is State.COMPLETED:
            fields.update(completedAt=repr(now), progress="1")
            self.redis.zadd(keys.completed_index(), {recording_id: now})
        if state in FINAL_STATES:
            self.redis.zadd(keys.ended_index(), {recording_id: now})  # RETENTION_DAYS counts from here
        self.update(recording_id, **fields)
        self.redis.zrem(keys.pending_finalize(), recording_id)
        self.redis.zrem(keys.active_recordings(), recording_id)

    def pending(self, older_than: float) -> list[str]:
        """Stopped recordings whose grace ended before older_than and that are not finished."""
        return [v.decode() for v in self.redis.zrangebyscore(keys.pending_finalize(), "-inf", older_than)]

    # Chunks ----------------------------------------------------------------

    def accept_chunk(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, record: ChunkRecord,
                     container_ok: bool, header: bool = False, max_participants: int = 0,
                     now: float | None = None, final: bool = False, rate: RateCheck | None = None) -> tuple[str, str | None]:
        """Record a staged chunk unless the caller's rate, the state, an existing sequence, the participant limit
        or the container forbids it; returns (outcome, recording state)."""
        return self.index.accept(recording_id, participant_id, stream_type, sequence, record,
                                 now=time.time() if now is None else now, container_ok=container_ok,
                                 header=header, max_participants=max_participants, final=final, rate=rate)

    def streams(self, recording_id: str) -> list[tuple[str, str]]:
        """(participantId, type) of every stream with at least one chunk, sorted."""
        members = sorted(m.decode() for m in self.redis.smembers(keys.streams(recording_id)))
        return [tuple(m.split("/", 1)) for m in members]  # type: ignore[misc]

    def chunk_record(self, recording_id: str, participant_id: str, stream_type: str, sequence: int) -> ChunkRecord | None:
        return self.index.record(recording_id, participant_id, stream_type, sequence)

    def chunks(self, recording_id: str, participant_id: str, stream_type: str) -> dict[int, ChunkRecord]:
        return self.index.records(recording_id, participant_id, stream_type)

    def delete(self, recording_id: str) -> None:
        """Forget a recording's chunk index (after its staging files are gone); status hash and stream facts stay."""
        pipe = self.redis.pipeline()
        for participant_id, stream_type in self.streams(recording_id):
            pipe.delete(keys.stream_chunks(recording_id, participant_id, stream_type))
        pipe.zrem(keys.completed_index(), recording_id)
        pipe.execute()


def _encode(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)

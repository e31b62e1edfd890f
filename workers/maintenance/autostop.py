"""Auto-stop at MAX_RECORDING_SECONDS and IDLE_STOP_SECONDS, paused time not counted (DESIGN.md §2, §4)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import redis

from workers import keys
from workers.pause import parse_pauses, paused_seconds, recorded_seconds
from workers.records import RecordingHash

log = logging.getLogger(__name__)

SCAN_LIMIT = 1000
"""Active recordings checked per beat run (oldest first); the rest wait for the next run."""

_STOP_BY_ID = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'recording' and state ~= 'paused' then
  redis.call('ZREM', KEYS[3], ARGV[5])
  return {state or 'gone', 0}
end
if (redis.call('HGET', KEYS[1], 'lastChunkAt') or '') ~= ARGV[6] or (redis.call('HGET', KEYS[1], 'pauses') or '') ~= ARGV[7] then
  return {'changed', 0}  -- a chunk, pause or resume arrived since the check: look again next run
end
if state == 'paused' then
  redis.call('HSET', KEYS[1], 'pauses', (redis.call('HGET', KEYS[1], 'pauses') or '') .. ARGV[1])
end
redis.call('HSET', KEYS[1], 'state', 'finalizing', 'stoppedAt', ARGV[1], 'acceptUntil', ARGV[2], 'taskId', ARGV[3],
           'updatedAt', ARGV[1], 'progress', '0', 'stopReason', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[5])
return {'finalizing', 1}
"""


@dataclass(frozen=True)
class Stopped:
    """A recording beat stopped: the caller queues its finalize under task_id and announces the state."""

    recording_id: str
    room: str
    reason: str
    task_id: str


def idle_seconds(rec: RecordingHash, now: float) -> float:
    """Seconds since the last chunk (or the start), paused time not counted."""
    since = max(float(rec.get("lastChunkAt") or 0), float(rec.get("startedAt") or now))
    pauses = parse_pauses(rec.get("pauses"))
    return max(0.0, now - since - (paused_seconds(pauses, now) - paused_seconds(pauses, since)))


def limit_reached(rec: RecordingHash, now: float, max_seconds: int, idle_limit: int) -> str | None:
    """max_duration, idle or None; a limit of 0 is off."""
    if max_seconds and recorded_seconds(rec, now) >= max_seconds:
        return "max_duration"
    if idle_limit and idle_seconds(rec, now) >= idle_limit:
        return "idle"
    return None


def stop_over_limits(client: redis.Redis, max_seconds: int, idle_limit: int, grace_seconds: float,
                     new_task_id: Callable[[], str], now: float | None = None,
                     ids: Iterable[str] | None = None) -> list[Stopped]:
    """Stop every active recording past a limit (one script each, which re-checks nothing moved meanwhile);
    `ids` checks those recordings instead of the oldest SCAN_LIMIT active ones."""
    now = time.time() if now is None else now
    if not max_seconds and not idle_limit:
        return []
    script = client.register_script(_STOP_BY_ID)
    stopped: list[Stopped] = []
    if ids is None:
        ids = [raw.decode() for raw in client.zrange(keys.active_recordings(), 0, SCAN_LIMIT - 1)]
    for recording_id in ids:
        fields = client.hgetall(keys.recording(recording_id))
        rec = {k.decode(): v.decode() for k, v in fields.items()}
        if rec.get("state") not in ("recording", "paused"):
            client.zrem(keys.active_recordings(), recording_id)
            continue
        reason = limit_reached(rec, now, max_seconds, idle_limit)
        if reason is None:
            continue
        task_id = new_task_id()
        if _stop(script, recording_id, rec, reason, grace_seconds, task_id, now) == "stopped":
            log.info("auto-stopped %s (%s)", recording_id, reason,
                     extra={"event": "recording_auto_stopped", "recordingId": recording_id, "room": rec["room"],
                            "stopReason": reason})
            stopped.append(Stopped(recording_id, rec["room"], reason, task_id))
    return stopped


def _stop(script, recording_id: str, rec: RecordingHash, reason: str, grace_seconds: float, task_id: str,
          now: float) -> str:
    """"stopped" when this call stopped it; else its state, "gone", or "changed" (it moved since `rec` was read)."""
    out = script(keys=[keys.recording(recording_id), keys.pending_finalize(), keys.active_recordings()],
                 args=[repr(now), repr(now + grace_seconds), task_id, reason, recording_id,
                       rec.get("lastChunkAt", ""), rec.get("pauses", "")])
    if int(out[1]):
        return "stopped"
    return out[0].decode() if isinstance(out[0], bytes) else out[0]


def stop_recording(client: redis.Redis, recording_id: str, reason: str, grace_seconds: float, task_id: str,
                   now: float | None = None) -> str:
    """Stop one recording by id (an operator's stop): "stopped" when this call stopped it, else its state or
    "gone"."""
    now = time.time() if now is None else now
    script = client.register_script(_STOP_BY_ID)
    for _ in range(3):  # a chunk landing between the read and the script only means: read again
        rec = {k.decode(): v.decode() for k, v in client.hgetall(keys.recording(recording_id)).items()}
        outcome = _stop(script, recording_id, rec, reason, grace_seconds, task_id, now)
        if outcome != "changed":
            break
    if outcome == "stopped":
        log.info("stopped %s (%s)", recording_id, reason,
                 extra={"event": "recording_stopped", "recordingId": recording_id, "stopReason": reason})
    return outcome

"""Deleting an ended recording for good: outputs, posters, manifest, staged chunks and every Redis key.

DELETE marks the recording `deleting` (one script: only completed or failed ones); the purge removes the
objects and files first and the recording hash last, so a repeat DELETE answers 202 while it runs and 404 after.
"""
from __future__ import annotations

import logging
import time
from typing import cast

import redis

from storage_providers.base import StorageProvider
from workers import keys
from workers.manifest import object_prefix
from workers.records import RecordingHash, parse_outputs
from workers.staging import ChunkStaging

log = logging.getLogger(__name__)

REQUEUE_AFTER_SECONDS = 300.0
"""A purge still unfinished this long after it was queued is taken as lost: a repeat DELETE queues it again."""
SCAN_COUNT = 500

_MARK = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found'} end
if state == 'completed' or state == 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'deleting', 'deletingSince', ARGV[1], 'updatedAt', ARGV[1])
  return {'queued'}
end
if state == 'deleting' then
  if tonumber(ARGV[1]) - tonumber(redis.call('HGET', KEYS[1], 'deletingSince') or '0') >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'deletingSince', ARGV[1])
    return {'queued'}
  end
  return {'running'}
end
return {'invalid_state', state}
"""

_FORGET_CURRENT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


def mark_deleting(client: redis.Redis, recording_id: str, now: float | None = None) -> tuple[str, str | None]:
    """(queued | running | not_found | invalid_state, state): queued means the caller enqueues the purge."""
    now = time.time() if now is None else now
    out = client.register_script(_MARK)(keys=[keys.recording(recording_id)], args=[repr(now), REQUEUE_AFTER_SECONDS])
    values = [v.decode() if isinstance(v, bytes) else v for v in out]
    return values[0], values[1] if len(values) > 1 else None


def _object_keys(provider: StorageProvider, rec: RecordingHash, recording_id: str) -> set[str]:
    """Everything stored under the recording's prefix, plus every key its outputs name (posters included)."""
    found = {info.key for info in provider.list(object_prefix(rec["room"], recording_id))}
    for output in parse_outputs(rec.get("outputs")).values():
        found.update(output.object_keys())
    return found


def purge(client: redis.Redis, provider: StorageProvider, staging: ChunkStaging, recording_id: str) -> str | None:
    """Remove the recording everywhere and return its room; None when it is already gone. Safe to run twice."""
    raw = client.hgetall(keys.recording(recording_id))
    if not raw:
        return None
    rec = cast(RecordingHash, {k.decode(): v.decode() for k, v in raw.items()})
    for key in sorted(_object_keys(provider, rec, recording_id)):
        provider.delete(key)
    staging.remove_recording(recording_id)
    doomed = [keys.finalize_lock(recording_id)]
    for pattern in (keys.recording_keys_pattern(recording_id), keys.upload_sessions_pattern(recording_id)):
        doomed.extend(client.scan_iter(match=pattern, count=SCAN_COUNT))
    pipe = client.pipeline(transaction=False)
    for key in doomed:
        pipe.delete(key)
    pipe.zrem(keys.pending_finalize(), recording_id)
    pipe.zrem(keys.active_recordings(), recording_id)
    pipe.zrem(keys.completed_index(), recording_id)
    pipe.zrem(keys.ended_index(), recording_id)
    pipe.zrem(keys.room_recordings(rec["room"]), recording_id)
    pipe.execute()
    client.register_script(_FORGET_CURRENT)(keys=[keys.room_current(rec["room"])], args=[recording_id])
    client.delete(keys.recording(recording_id))  # last: until now a repeat DELETE answers 202
    log.info("recording deleted: recording=%s room=%s", recording_id, rec["room"],
             extra={"event": "recording_deleted", "recordingId": recording_id, "room": rec["room"]})
    return rec["room"]


def expired(client: redis.Redis, retention_days: float, now: float | None = None, limit: int = 100) -> list[str]:
    """Ended recordings past RETENTION_DAYS, oldest first, at most `limit` per beat run."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400.0
    return [m.decode() for m in client.zrangebyscore(keys.ended_index(), "-inf", cutoff, start=0, num=limit)]


def claim_expired(client: redis.Redis, retention_days: float, now: float | None = None) -> list[str]:
    """The expired recordings this call marked deleting (the caller purges them); an id whose recording is gone
    leaves the ended index, so the next sweep does not meet it again."""
    claimed = []
    for recording_id in expired(client, retention_days, now):
        outcome, _state = mark_deleting(client, recording_id, now)
        if outcome == "not_found":
            client.zrem(keys.ended_index(), recording_id)
        elif outcome == "queued":
            claimed.append(recording_id)
    return claimed

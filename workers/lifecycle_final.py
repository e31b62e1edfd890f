"""End of stream closes the grace window: once every stream of a stopped recording declared its final chunk and
holds every sequence up to it, no late chunk can still come, so finalize need not wait out FINALIZE_GRACE_SECONDS."""
from __future__ import annotations

import time

import redis

from workers import keys

_CLOSE_IF_COMPLETE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'finalizing' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'acceptUntil') or '0') <= tonumber(ARGV[1]) then return 0 end
local streams = redis.call('SMEMBERS', KEYS[2])
if #streams == 0 then return 0 end
for _, stream in ipairs(streams) do
  local slash = string.find(stream, '/', 1, true)
  local tail = string.sub(stream, 1, slash - 1) .. ':' .. string.sub(stream, slash + 1)
  local stats = redis.call('HMGET', ARGV[2] .. tail, 'final', 'max', 'min', 'minHeader')
  if not stats[1] or stats[1] ~= stats[2] then return 0 end
  if stats[4] ~= '1' and stats[3] ~= '0' then return 0 end
  if redis.call('ZCARD', ARGV[4] .. tail) > 0 then return 0 end
end
redis.call('HSET', KEYS[1], 'acceptUntil', ARGV[1], 'updatedAt', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[3])
return 1
"""


def finalize_target(client: redis.Redis, recording_id: str) -> tuple[str, str | None, str | None]:
    """The finalize task id stop chose (the recording id when none), the room and the output format (which picks
    the queue), to queue finalize now."""
    task_id, room, fmt = client.hmget(keys.recording(recording_id), "taskId", "room", "format")
    return (task_id.decode() if task_id else recording_id), (room.decode() if room else None), \
        (fmt.decode() if fmt else None)


def close_if_complete(client: redis.Redis, recording_id: str, now: float | None = None) -> bool:
    """True when this call closed the grace window (the caller queues finalize now); one atomic script."""
    now = time.time() if now is None else now
    script = client.register_script(_CLOSE_IF_COMPLETE)
    return bool(script(keys=[keys.recording(recording_id), keys.streams(recording_id), keys.pending_finalize()],
                       args=[repr(now), keys.stream_stats_prefix(recording_id), recording_id,
                             keys.stream_holes_prefix(recording_id)]))

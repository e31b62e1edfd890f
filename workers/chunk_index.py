"""The per-stream chunk index in Redis: which sequences are held, and running facts about them.

Every accepted chunk is one atomic Lua call that checks state, sequence, participant limit and container,
records the chunk, and updates the stream's counters and runs of missing sequences. So a status read costs
a handful of bounded reads whatever the chunk count, and only finalize reads the whole index.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import keys
from workers.clock import normalize_ms
from workers.redis_client import LeanScript

MAX_LISTED_MISSING = 1000
"""The status lists at most this many missing sequences (the lowest); missingCount has the total."""


@dataclass(frozen=True)
class ChunkRecord:
    """What Redis remembers of one accepted chunk: its content hash, size, client timestamp and file."""

    digest: str
    size: int
    timestamp: float | None
    name: str

    def encode(self) -> str:
        ts = "" if self.timestamp is None else repr(self.timestamp)
        return f"{self.digest} {self.size} {ts} {self.name}"

    @classmethod
    def decode(cls, raw: str) -> "ChunkRecord":
        digest, size, ts, name = raw.split(" ")
        return cls(digest=digest, size=int(size), timestamp=float(ts) if ts else None, name=name)


_INDEX = """
local function index_chunk(seq, record, size, header, pk, pid, skew)
  redis.call('HSET', KEYS[2], seq, record)
  redis.call('SADD', KEYS[3], pk)
  redis.call('SADD', KEYS[6], pid)
  local s = tonumber(seq)
  redis.call('HINCRBY', KEYS[4], 'chunks', 1)
  redis.call('HINCRBY', KEYS[4], 'bytes', size)
  if skew ~= '' then
    local least = redis.call('HGET', KEYS[4], 'skewMs')
    if (not least) or tonumber(skew) < tonumber(least) then redis.call('HSET', KEYS[4], 'skewMs', skew) end
  end
  local low = redis.call('HGET', KEYS[4], 'min')
  if not low then
    redis.call('HSET', KEYS[4], 'min', s, 'max', s, 'minHeader', header)
    return
  end
  low = tonumber(low)
  local high = tonumber(redis.call('HGET', KEYS[4], 'max'))
  if s > high then
    if s > high + 1 then redis.call('ZADD', KEYS[5], high + 1, (high + 1) .. '-' .. (s - 1)) end
    redis.call('HSET', KEYS[4], 'max', s)
  elseif s < low then
    if s < low - 1 then redis.call('ZADD', KEYS[5], s + 1, (s + 1) .. '-' .. (low - 1)) end
    redis.call('HSET', KEYS[4], 'min', s, 'minHeader', header)
  else
    local run = redis.call('ZREVRANGEBYSCORE', KEYS[5], s, '-inf', 'LIMIT', 0, 1)[1]
    if run then
      local dash = string.find(run, '-', 1, true)
      local first, last = tonumber(string.sub(run, 1, dash - 1)), tonumber(string.sub(run, dash + 1))
      if s <= last then
        redis.call('ZREM', KEYS[5], run)
        if first <= s - 1 then redis.call('ZADD', KEYS[5], first, first .. '-' .. (s - 1)) end
        if s + 1 <= last then redis.call('ZADD', KEYS[5], s + 1, (s + 1) .. '-' .. last) end
      end
    end
  end
end
"""

_ACCEPT = _INDEX + """
for i = 1, tonumber(ARGV[12]) do
  local window = KEYS[6 + i]
  local count = redis.call('INCR', window)
  if count == 1 then redis.call('EXPIRE', window, ARGV[12 + 2 * i]) end
  if count > tonumber(ARGV[11 + 2 * i]) then
    local held = redis.call('HGET', KEYS[2], ARGV[1])
    held = held and string.sub(held, 1, 64) == string.sub(ARGV[2], 1, 64)
    return {'rate_limited', '', tostring(redis.call('PTTL', window)), held and '1' or '0'}
  end
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found'} end
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  if string.sub(existing, 1, 64) == string.sub(ARGV[2], 1, 64) then return {'duplicate', state} end
  return {'conflict', state}
end
local open = state == 'recording' or state == 'paused'
if state == 'finalizing' then open = tonumber(ARGV[3]) <= tonumber(redis.call('HGET', KEYS[1], 'acceptUntil')) end
if not open then return {'not_recording', state} end
local final = redis.call('HGET', KEYS[4], 'final')
if final and tonumber(ARGV[1]) > tonumber(final) then return {'after_final', state, final} end
if ARGV[11] == '1' then
  local high = redis.call('HGET', KEYS[4], 'max')
  if final or (high and tonumber(high) > tonumber(ARGV[1])) then return {'after_final', state, final or high} end
end
local limit = tonumber(ARGV[9])
if limit > 0 and redis.call('SISMEMBER', KEYS[6], ARGV[8]) == 0 and redis.call('SCARD', KEYS[6]) >= limit then
  return {'participant_limit', state}
end
if ARGV[5] ~= '1' then return {'unsupported', state} end
index_chunk(ARGV[1], ARGV[2], ARGV[7], ARGV[6], ARGV[4], ARGV[8], ARGV[10])
if ARGV[11] == '1' then redis.call('HSET', KEYS[4], 'final', ARGV[1]) end
redis.call('HSET', KEYS[1], 'lastChunkAt', ARGV[3])  -- what IDLE_STOP_SECONDS is measured from
return {'stored', state}
"""

_RESTORE = _INDEX + """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
index_chunk(ARGV[1], ARGV[2], ARGV[7], ARGV[6], ARGV[4], ARGV[8], ARGV[10])
return 1
"""

_UNREADABLE = """
if redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'chunks', -1)
  redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(ARGV[2]))
end
"""

@dataclass(frozen=True)
class RateWindow:
    """One fixed window of CHUNK_RATE_LIMIT for one caller: its counter's key, the requests it allows, its length."""

    key: str
    limit: int
    seconds: int


@dataclass
class RateCheck:
    """The caller's rate windows, counted by the accept script before any other check (one round trip per chunk
    instead of two). `counted` is set when the script answered (the request was counted there); `retry_after_ms`
    when it refused the request for its rate."""

    windows: tuple[RateWindow, ...]
    text: str
    """The limit as configured (for the error message)."""
    counted: bool = False
    retry_after_ms: int | None = None
    held: bool = False
    """Refused, but the index already holds these very bytes at this sequence (a retry): its file must stay."""


STAT_FIELDS = ("chunks", "bytes", "min", "max", "minHeader", "skewMs", "final")


@dataclass(frozen=True)
class StreamFacts:
    """One stream as status and manifest show it: counts, range and missing sequences."""

    chunks: int
    bytes: int
    first: int | None
    last: int | None
    missing: list[int]
    missing_count: int
    skew_ms: float | None
    """Least (server arrival − client timestamp) over the stream's chunks: its clock offset plus the least delay."""
    final: int | None = None
    """The sequence the client declared its stream's last (final: true), if it did."""

    def body(self) -> dict:
        declared = {"finalSequence": self.final} if self.final is not None else {}
        return {"chunks": self.chunks, "bytes": self.bytes, "firstSequence": self.first, "lastSequence": self.last,
                "missing": self.missing, "missingCount": self.missing_count, **declared}


class ChunkIndex:
    """Accepts, restores and summarizes the chunks of a recording's streams."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._accept = LeanScript(client, _ACCEPT)  # every chunk's one round trip
        self._restore = client.register_script(_RESTORE)
        self._unreadable = client.register_script(_UNREADABLE)

    @staticmethod
    def _keys(recording_id: str, participant_id: str, stream_type: str) -> list[str]:
        return [keys.recording(recording_id), keys.stream_chunks(recording_id, participant_id, stream_type),
                keys.streams(recording_id), keys.stream_stats(recording_id, participant_id, stream_type),
                keys.stream_holes(recording_id, participant_id, stream_type), keys.participants(recording_id)]

    @staticmethod
    def _args(participant_id: str, stream_type: str, sequence: int, record: ChunkRecord, now: float, container_ok: bool,
              header: bool, max_participants: int, final: bool = False) -> list[object]:
        stamp = normalize_ms(record.timestamp)
        # A declared last chunk is cut short by stop and sent at once: its skew would understate the clock
        # offset by up to a chunk's length (the pause cut relies on it), so it does not count.
        skew = "" if stamp is None or final else repr(round(now * 1000.0 - stamp, 3))
        return [sequence, record.encode(), repr(now), f"{participant_id}/{stream_type}", "1" if container_ok else "0",
                "1" if header else "0", record.size, participant_id, max_participants, skew, "1" if final else "0"]

    def accept(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, record: ChunkRecord, *,
               now: float, container_ok: bool, header: bool, max_participants: int = 0,
               final: bool = False, rate: RateCheck | None = None) -> tuple[str, str | None]:
        """(outcome, recording state): rate_limited (first: `rate.retry_after_ms` says when the window reopens),
        stored, duplicate, conflict, after_final (above a declared final chunk, or a final chunk below a held
        one), not_found, not_recording, participant_limit or unsupported; duplicates are recognized in any state,
        so retries are always safe."""
        windows = rate.windows if rate is not None else ()
        args = self._args(participant_id, stream_type, sequence, record, now, container_ok, header, max_participants, final)
        args.append(len(windows))
        for window in windows:
            args += [window.limit, window.seconds]
        out = self._accept(keys=self._keys(recording_id, participant_id, stream_type) + [w.key for w in windows], args=args)
        out = [v.decode() if isinstance(v, bytes) else v for v in out]
        if rate is not None:
            rate.counted = True
            if out[0] == "rate_limited":
                rate.retry_after_ms, rate.held = int(out[2]), out[3] == "1"
                return out[0], None
        return out[0], out[1] if len(out) > 1 else None

    def restore(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, record: ChunkRecord, *,
                header: bool, now: float) -> bool:
        """Index a chunk found in staging (rebuild), whatever the state; False when the sequence is indexed."""
        args = self._args(participant_id, stream_type, sequence, record, now, True, header, 0)
        return bool(self._restore(keys=self._keys(recording_id, participant_id, stream_type), args=args))

    def mark_unreadable(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, size: int) -> None:
        """A chunk the index holds but staging cannot give back: from now on it counts as missing (once)."""
        self._unreadable(keys=[keys.stream_stats(recording_id, participant_id, stream_type),
                               keys.stream_unreadable(recording_id, participant_id, stream_type)], args=[sequence, size])

    def record(self, recording_id: str, participant_id: str, stream_type: str, sequence: int) -> ChunkRecord | None:
        raw = self.redis.hget(keys.stream_chunks(recording_id, participant_id, stream_type), str(sequence))
        return ChunkRecord.decode(raw.decode()) if raw else None

    def records(self, recording_id: str, participant_id: str, stream_type: str) -> dict[int, ChunkRecord]:
        """The whole index of one stream: batch finalize's read, linear in the chunk count."""
        raw = self.redis.hgetall(keys.stream_chunks(recording_id, participant_id, stream_type))
        return {int(k): ChunkRecord.decode(v.decode()) for k, v in raw.items()}

    def records_at(self, recording_id: str, wanted: list[tuple[str, str, int]]) -> list[ChunkRecord | None]:
        """One chunk's record per (participantId, type, sequence), in one round trip: finalize reads each stream's
        first chunk (its timestamp lines the participant up) without reading the rest."""
        pipe = self.redis.pipeline(transaction=False)
        for participant_id, stream_type, sequence in wanted:
            pipe.hget(keys.stream_chunks(recording_id, participant_id, stream_type), str(sequence))
        return [ChunkRecord.decode(raw.decode()) if raw else None for raw in pipe.execute()]

    def held(self, recording_id: str, streams: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Each listed stream's index entries (HLEN: constant time), unreadable ones included. With the facts' first
        and last sequence this says whether the index is one run without a hole, without reading it."""
        pipe = self.redis.pipeline(transaction=False)
        for participant_id, stream_type in streams:
            pipe.hlen(keys.stream_chunks(recording_id, participant_id, stream_type))
        return dict(zip(streams, pipe.execute()))

    def facts(self, recording_id: str, streams: list[tuple[str, str]]) -> dict[tuple[str, str], StreamFacts]:
        """Every listed stream's facts in one round trip of bounded reads."""
        pipe = self.redis.pipeline(transaction=False)
        for participant_id, stream_type in streams:
            pipe.hmget(keys.stream_stats(recording_id, participant_id, stream_type), STAT_FIELDS)
            pipe.zrange(keys.stream_holes(recording_id, participant_id, stream_type), 0, MAX_LISTED_MISSING - 1)
            pipe.zrange(keys.stream_unreadable(recording_id, participant_id, stream_type), 0, MAX_LISTED_MISSING - 1)
        replies = pipe.execute()
        out = {}
        for i, stream in enumerate(streams):
            stats, holes, unreadable = replies[3 * i: 3 * i + 3]
            out[stream] = _facts(stats, holes, unreadable)
        return out


def _facts(stats: list[bytes | None], holes: list[bytes], unreadable: list[bytes]) -> StreamFacts:
    chunks, size, low, high, min_header, skew, final = stats
    if low is None:
        return StreamFacts(0, 0, None, None, [], 0, None)
    low_i, high_i, held = int(low), int(high), int(chunks or 0)
    base = low_i if min_header == b"1" else 0
    runs = [(base, low_i - 1)] if base < low_i else []
    for member in holes:
        first, last = member.decode().split("-")
        runs.append((int(first), int(last)))
    gaps: list[int] = []
    for first, last in runs:  # ascending and disjoint: the lowest MAX_LISTED_MISSING come from the first runs
        gaps.extend(range(first, min(last, first + MAX_LISTED_MISSING - len(gaps) - 1) + 1))
        if len(gaps) >= MAX_LISTED_MISSING:
            break
    listed = sorted(set(gaps) | {int(s) for s in unreadable})[:MAX_LISTED_MISSING]
    return StreamFacts(chunks=held, bytes=int(size or 0), first=low_i, last=high_i, missing=listed,
                       missing_count=(high_i - base + 1) - held, skew_ms=float(skew) if skew is not None else None,
                       final=int(final) if final is not None else None)

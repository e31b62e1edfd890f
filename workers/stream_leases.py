"""Caps on open event streams, per recording and per token, counted in Redis so they hold across web workers.

Each open stream holds a lease: a member of two sorted sets (the recording's and the token's) scored by its
expiry. A live stream refreshes its lease; a crashed worker's leases simply expire and stop counting, so
no cleanup is ever needed for the caps to recover.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import redis

from workers import keys
from workers.errors import RateLimited

LEASE_SECONDS = 30
"""How long a lease counts without a refresh; streams refresh every few seconds, a dead worker's lapse after this."""

_ACQUIRE = """
local now, expiry = tonumber(ARGV[1]), ARGV[2]
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], expiry, ARGV[3])
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
return 0
"""
"""Drop lapsed leases, check both caps, then add the lease to both sets: one atomic step, so caps never overshoot."""


def token_digest(token: str) -> str:
    """Names a token in Redis without storing it (a key is visible to anyone with Redis access)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StreamLease:
    """One open stream's hold on a slot of its recording and of its token."""

    client: redis.Redis
    recording_key: str
    token_key: str
    lease_id: str
    seconds: int = LEASE_SECONDS

    def refresh(self) -> None:
        """Pushes the expiry forward; re-adds the lease if Redis lost it (a restart), so it counts again."""
        expiry = time.time() + self.seconds
        pipe = self.client.pipeline(transaction=False)
        for key in (self.recording_key, self.token_key):
            pipe.zadd(key, {self.lease_id: expiry})
            pipe.expire(key, self.seconds)
        pipe.execute()

    def release(self) -> None:
        """Frees both slots at once when the stream ends or its client goes away."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.recording_key, self.lease_id)
        pipe.zrem(self.token_key, self.lease_id)
        pipe.execute()


class StreamLimiter:
    """Hands out stream leases within MAX_EVENT_STREAMS_PER_RECORDING and MAX_EVENT_STREAMS_PER_TOKEN."""

    def __init__(self, client: redis.Redis, per_recording: int, per_token: int,
                 lease_seconds: int = LEASE_SECONDS) -> None:
        self.client = client
        self.per_recording = per_recording
        self.per_token = per_token
        self.lease_seconds = lease_seconds
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, recording_id: str, token: str) -> StreamLease:
        """A lease for one more stream, or RateLimited (429) naming the cap that is full."""
        lease = StreamLease(self.client, keys.event_stream_leases(recording_id),
                            keys.token_stream_leases(token_digest(token)), secrets.token_hex(8), self.lease_seconds)
        now = time.time()
        verdict = self._acquire(
            keys=[lease.recording_key, lease.token_key],
            args=[now, now + lease.seconds, lease.lease_id, self.per_recording, self.per_token, lease.seconds * 1000],
        )
        if verdict == 2:
            raise RateLimited(f"this token already has {self.per_token} open event streams; close one first",
                              retry_after=5, limit=self.per_token)
        if verdict == 1:
            raise RateLimited(f"this recording already has {self.per_recording} open event streams",
                              retry_after=5, recordingId=recording_id, limit=self.per_recording)
        return lease

    def open_streams(self, recording_id: str) -> int:
        """How many live leases a recording holds now (lapsed ones not counted)."""
        return int(self.client.zcount(keys.event_stream_leases(recording_id), time.time(), "+inf"))

"""RTC_MAX_SOCKETS_PER_TOKEN: open signalling sockets per token, counted in Redis so the cap holds across web
processes. Each socket holds a lease scored by its expiry and refreshed while it lives; a crashed process's
leases lapse on their own."""
from __future__ import annotations

import secrets
import time

import redis

from workers import keys
from workers.errors import RateLimited
from workers.stream_leases import token_digest

LEASE_SECONDS = 60
"""A live socket refreshes well within this; a dead process's sockets stop counting after it."""

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class SocketLease:
    def __init__(self, client: redis.Redis, key: str, member: str) -> None:
        self.client, self.key, self.member = client, key, member
        self.refreshed = time.time()
        self.retry_at = 0.0

    def refresh(self) -> None:
        """Cheap to call often: writes at most every LEASE_SECONDS / 4. A Redis outage shorter than the lease does
        not end the call (the peer holds its segments meanwhile); one outlasting it raises (→ `unavailable`)."""
        now = time.time()
        if now - self.refreshed >= LEASE_SECONDS / 4 and now >= self.retry_at:
            try:
                self.client.zadd(self.key, {self.member: now + LEASE_SECONDS})
            except redis.RedisError:
                if now - self.refreshed >= LEASE_SECONDS:
                    raise
                self.retry_at = now + 1.0
                return
            self.refreshed = now

    def release(self) -> None:
        try:
            self.client.zrem(self.key, self.member)
        except redis.RedisError:
            pass  # the lease lapses on its own


def acquire(client: redis.Redis, token: str, limit: int) -> SocketLease:
    """A lease for one more socket of this token, or RateLimited when it holds `limit` already."""
    key = keys.signal_sockets(token_digest(token))
    member = secrets.token_hex(8)
    now = time.time()
    ok = client.register_script(_ACQUIRE)(keys=[key], args=[repr(now), repr(now + LEASE_SECONDS), member, limit,
                                                            LEASE_SECONDS * 2])
    if not ok:
        raise RateLimited(f"this token already holds {limit} signalling sockets (RTC_MAX_SOCKETS_PER_TOKEN)",
                          retry_after=LEASE_SECONDS)
    return SocketLease(client, key, member)

"""Which peer records a participant, and which sequence each of its segments takes — in Redis, so both hold
across web processes.

A participant may have a second peer before the first one is gone (a reconnect from another tab or after a
network change, possibly landing on another web process). The newest peer claims the participant; an older
one finds its claim gone before its next segment and stops recording (what it stored stays). Sequences come
from one counter per recording and participant, started after anything the stream already holds, so two peers
never write the same sequence even while they overlap for a moment.
"""
from __future__ import annotations

import redis

from workers import keys

CLAIM_SECONDS = 3600
"""A claim outlives any gap between segments; it is renewed with every segment and deleted when its peer ends."""

_HOLDS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_NEXT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local high = redis.call('HGET', KEYS[2], 'max')
  redis.call('SET', KEYS[1], high or -1)
end
return redis.call('INCR', KEYS[1])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Claims:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._holds = client.register_script(_HOLDS)
        self._next = client.register_script(_NEXT)
        self._release = client.register_script(_RELEASE)

    def claim(self, room: str, participant_id: str, peer_id: str) -> None:
        """This peer records the participant from now on (an older peer's claim is replaced)."""
        self.client.set(keys.webrtc_peer(room, participant_id), peer_id, ex=CLAIM_SECONDS)

    def holds(self, room: str, participant_id: str, peer_id: str) -> bool:
        """True (and the claim renewed) while no newer peer took the participant over."""
        return bool(self._holds(keys=[keys.webrtc_peer(room, participant_id)], args=[peer_id, CLAIM_SECONDS]))

    def release(self, room: str, participant_id: str, peer_id: str) -> None:
        self._release(keys=[keys.webrtc_peer(room, participant_id)], args=[peer_id])

    def next_sequence(self, recording_id: str, participant_id: str, kind: str) -> int:
        """The next free sequence of the stream: after the highest held when the counter starts, then one each."""
        return int(self._next(keys=[keys.webrtc_sequence(recording_id, participant_id),
                                    keys.stream_stats(recording_id, participant_id, kind)]))

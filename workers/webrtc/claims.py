"""Which peer records a participant, and which sequence each of its segments takes — in Redis, so both hold
across web processes.

A participant may have a second peer before the first one is gone (a reconnect from another tab or after a
network change, possibly landing on another web process). The newest peer claims the participant; an older
one finds its claim gone before its next segment and stops recording (what it stored stays). Sequences come
from one counter per recording and participant, started after anything the stream already holds, so two peers
never write the same sequence even while they overlap for a moment.
"""
from __future__ import annotations

import json
from typing import Mapping

import redis

from workers import keys
from workers.pause import Pause, parse_pauses, paused_seconds

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

    def next_sequence(self, recording_id: str, participant_id: str, stream_type: str) -> int:
        """The next free sequence of the stream: after the highest held when the counter starts, then one each."""
        return int(self._next(keys=[keys.webrtc_sequence(recording_id, participant_id),
                                    keys.stream_stats(recording_id, participant_id, stream_type)]))


MAX_GAPS = 100
"""Reconnect gaps listed per participant (the oldest kept): a flapping connection cannot grow the status."""

_ENDED = """
redis.call('HSET', KEYS[1], ARGV[1] .. ':ended', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

_RESUMED = """
local ended = redis.call('HGET', KEYS[1], ARGV[1] .. ':ended')
if not ended then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1] .. ':ended')
local started = tonumber(redis.call('HGET', KEYS[2], 'startedAt') or ended)
local gaps = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]) or '[]')
if #gaps >= tonumber(ARGV[3]) then return 0 end
local from = math.max(0, tonumber(ended) - started)
local to = math.max(from, tonumber(ARGV[2]) - started)
if to - from < tonumber(ARGV[4]) then return 0 end
table.insert(gaps, {fromSeconds = math.floor(from * 1000 + 0.5) / 1000, toSeconds = math.floor(to * 1000 + 0.5) / 1000})
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(gaps))
return 1
"""

MIN_GAP_SECONDS = 1.0
"""Shorter spans between one peer's last media and the next peer's first are a hand-over's own cost (a segment cut,
a key frame), not a gap: a second tab taking over, or a reconnect racing the old socket, lists none."""

GAP_KEY_SECONDS = 30 * 24 * 3600
"""The gaps hash lives under recording(id):*, so deleting the recording deletes it; this only bounds a forgotten one."""


class Gaps:
    """participants.<pid>.gaps for WebRTC reconnects: the arrival of the last media a participant's peer stored
    (noted with every segment, so a peer whose network dropped while its socket lingered counts from when its media
    stopped, not from when the socket closed) and of the first media of the participant's next peer, in seconds
    since the recording started
    (paused time not counted: see read)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._ended = client.register_script(_ENDED)
        self._resumed = client.register_script(_RESUMED)

    def ended(self, recording_id: str, participant_id: str, at: float) -> None:
        """The participant's media recorded so far reaches `at` (wall clock of its last frame's arrival)."""
        self._ended(keys=[keys.webrtc_gaps(recording_id)], args=[participant_id, repr(at), GAP_KEY_SECONDS])

    def resumed(self, recording_id: str, participant_id: str, at: float) -> bool:
        """True when this closed a gap (the participant had stopped sending during this recording)."""
        return bool(self._resumed(keys=[keys.webrtc_gaps(recording_id), keys.recording(recording_id)],
                                  args=[participant_id, repr(at), MAX_GAPS, MIN_GAP_SECONDS]))

    @staticmethod
    def read(client: redis.Redis, recording_id: str, rec: Mapping | None) -> dict[str, list[dict]]:
        """Every participant's closed gaps (one HGETALL of a bounded hash), in recorded seconds: the hash holds wall
        seconds since the start, and paused time is left out as it is from the output and the limits (DESIGN §4);
        a gap wholly inside a pause lost nothing, so it is not listed. rec: the recording hash (its pauses)."""
        raw = client.hgetall(keys.webrtc_gaps(recording_id))
        pauses = parse_pauses(rec.get("pauses")) if rec else []
        started = float(rec.get("startedAt") or 0) if rec else 0.0
        out: dict[str, list[dict]] = {}
        for key, value in raw.items():
            if key.endswith(b":ended"):
                continue
            spans = [(recorded(pauses, started, g["fromSeconds"]), recorded(pauses, started, g["toSeconds"]))
                     for g in json.loads(value)]
            out[key.decode()] = [{"fromSeconds": a, "toSeconds": b} for a, b in spans if b > a]
        return out


def recorded(pauses: list[Pause], started: float, seconds: float) -> float:
    """Wall seconds since the start as recorded seconds: minus the time paused before then."""
    return round(seconds - paused_seconds(pauses, started + seconds), 3)

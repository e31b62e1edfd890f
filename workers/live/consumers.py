"""Which workers consume the `live` queue, as they announce it in Redis, so intake queues a live step only when one
will run it.

Why announce rather than trust configuration: the web node cannot see which queues the workers were started with
(`WORKER_QUEUES`), and a step that nobody consumes only fills the queue. Each live worker keeps its name in one
sorted set, scored by when its announcement lapses; a worker refreshes it every `refresh` seconds and its entry
lapses after three refreshes missed, so a worker killed with -9 stops counting within that time. All times are
Redis's own (TIME), so the clocks of web and worker nodes never have to agree.

Intake checks the set in the same script as the SET NX that limits steps to one per period, and the set is read only
when a step would be queued. A web process remembers how long the period it saw lasts (the script answers the due
key's time left), so only its first chunk of each period makes that call: a chunk's acceptance stays its one round
trip."""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict

import redis

from workers import keys

log = logging.getLogger(__name__)

MISSED_REFRESHES = 3
"""An announcement lapses after this many refresh periods without a refresh."""

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

_ANNOUNCE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""
"""ZADD name with its lapse time; the key lives as long as its latest announcement."""

_COUNT = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')"

_SCHEDULE = """
local period = ARGV[1]
if redis.call('HGET', KEYS[3], 'format') == 'mp4' then period = ARGV[2] end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', period) then return {0, redis.call('PTTL', KEYS[1])} end
""" + _NOW + """
if redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') > 0 then return {1, tonumber(period)} end
return {-1, tonumber(period)}
"""
"""{0, ms left}: a step is already due this period; {1, period}: queue one; {-1, period}: the period began but no
worker consumes `live`. The due key stays set in the last case too, so the consumer set is read at most once per
period per recording. The period is ARGV[2] for a recording whose output is transcoded (`format: mp4`, read from
the recording in the same call), else ARGV[1]."""

REMEMBERED_RECORDINGS = 10_000
"""Recordings whose current period a web process remembers (oldest forgotten first): bounded memory, and a
forgotten one costs only one script call more."""


class Due(enum.Enum):
    """What intake should do about a live step for a new chunk."""

    QUEUE = 1
    ALREADY_DUE = 0
    NO_CONSUMER = -1


class LiveConsumers:
    """The announcements of the workers that consume `live`, and intake's one-round-trip check of them."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._announce = client.register_script(_ANNOUNCE)
        self._count = client.register_script(_COUNT)
        self._schedule = client.register_script(_SCHEDULE)
        self._quiet_until: OrderedDict[str, float] = OrderedDict()
        """Per recording, until when (monotonic) its period's step is settled: the chunks before then need no
        round trip, so with LIVE_FINALIZE on a chunk still costs the one Redis round trip of its acceptance."""
        self._lock = threading.Lock()

    def announce(self, name: str, ttl_seconds: float) -> None:
        self._announce(keys=[keys.live_consumers()], args=[name, max(1, int(ttl_seconds * 1000))])

    def withdraw(self, name: str) -> None:
        self.client.zrem(keys.live_consumers(), name)

    def count(self) -> int:
        """Workers whose announcement has not lapsed."""
        return int(self._count(keys=[keys.live_consumers()]))

    def due(self, recording_id: str, every_seconds: float, transcode_every_seconds: float) -> tuple[Due, float]:
        """Whether this chunk begins a step period, and whether a live worker would run it, with the period in
        seconds (`transcode_every_seconds` where the recording's output is transcoded): one script for the first
        chunk this process sees in a period, none for the rest of it (the script's answer says how long it lasts)."""
        now = time.monotonic()
        with self._lock:
            if self._quiet_until.get(recording_id, 0.0) > now:
                return Due.ALREADY_DUE, 0.0
        periods = [max(1, int(seconds * 1000)) for seconds in (every_seconds, transcode_every_seconds)]
        code, left_ms = self._schedule(keys=[keys.live_due(recording_id), keys.live_consumers(),
                                             keys.recording(recording_id)], args=periods)
        with self._lock:
            self._quiet_until[recording_id] = now + max(0, int(left_ms)) / 1000
            self._quiet_until.move_to_end(recording_id)
            while len(self._quiet_until) > REMEMBERED_RECORDINGS:
                self._quiet_until.popitem(last=False)
        return Due(int(code)), int(left_ms) / 1000


class Heartbeat:
    """Keeps one worker announced as a live consumer from a daemon thread until stopped; at stop it withdraws, so
    a worker shut down cleanly stops counting at once (one killed stops counting when its entry lapses)."""

    def __init__(self, consumers: LiveConsumers, name: str, refresh_seconds: float) -> None:
        self.consumers, self.name, self.refresh = consumers, name, refresh_seconds
        self.ttl = refresh_seconds * MISSED_REFRESHES
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-consumer-heartbeat", daemon=True)

    def start(self) -> None:
        """Announces once before returning (intake sees the worker as soon as it is ready), then keeps it fresh."""
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(self.refresh + 5)
        try:
            self.consumers.withdraw(self.name)
        except redis.RedisError:
            log.warning("could not withdraw live consumer %s: its announcement lapses in %.0f s", self.name, self.ttl)

    def _run(self) -> None:
        while not self._stopped.wait(self.refresh):
            self._beat()

    def _beat(self) -> None:
        try:
            self.consumers.announce(self.name, self.ttl)
        except redis.RedisError:  # Redis down: steps are not queued meanwhile anyway; the next beat tries again
            log.warning("could not announce live consumer %s (Redis unavailable)", self.name)

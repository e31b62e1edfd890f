"""Facts that live in Redis, read at scrape time by a bounded collector: one round trip, no SCAN of the keyspace.
Read at scrape rather than kept in each process, they are right across every web and worker process and node.
Every read is O(1) but the participants sum, one SCARD per active recording inside a script (microseconds each)."""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers import keys


_ACTIVE = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local participants = 0
for _, id in ipairs(ids) do participants = participants + redis.call('SCARD', ARGV[1] .. id .. ARGV[2]) end
return {#ids, participants}
"""
_PARTICIPANTS_KEY = tuple(keys.participants("\0").split("\0"))
"""keys.participants(id) as (before the id, after it), so the script builds the same names."""


class RedisCollector(Collector):
    """tapedeck_redis_up, active recordings and their participants, pending finalizes and the oldest one's age,
    and each Celery queue's depth."""

    def __init__(self, client: redis.Redis, queues: Iterable[str]) -> None:
        self.client, self.queues = client, tuple(queues)
        self._active = client.register_script(_ACTIVE)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("tapedeck_redis_up", "1 when Redis answered this scrape")
        try:
            facts = self._read()
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        pending, oldest, depths, (active, participants) = facts
        yield GaugeMetricFamily("tapedeck_active_recordings", "Recordings recording or paused", value=active)
        yield GaugeMetricFamily("tapedeck_concurrent_participants",
                                "Participants that sent media to a recording still recording or paused",
                                value=participants)
        yield GaugeMetricFamily("tapedeck_pending_finalizes", "Stopped recordings waiting for finalize", value=pending)
        yield GaugeMetricFamily("tapedeck_oldest_pending_finalize_seconds",
                                "Age of the oldest stopped recording not yet finalized (0 when none)", value=oldest)
        depth = GaugeMetricFamily("tapedeck_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        for queue, size in zip(self.queues, depths):
            depth.add_metric([queue], size)
        yield depth

    def _read(self) -> tuple[int, float, list[int], tuple[int, int]]:
        """One pipeline round trip: ZCARD, the oldest member's score, one LLEN per queue, the active script."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(keys.pending_finalize())
        pipe.zrange(keys.pending_finalize(), 0, 0, withscores=True)
        for queue in self.queues:
            pipe.llen(queue)  # kombu's Redis transport keeps a queue's messages in a list named after it
        self._active(keys=[keys.active_recordings()], args=list(_PARTICIPANTS_KEY), client=pipe)
        pending, oldest, *depths, active = pipe.execute()
        age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
        return int(pending), age, [int(d) for d in depths], (int(active[0]), int(active[1]))

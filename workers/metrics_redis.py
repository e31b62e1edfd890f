"""Facts that live in Redis, read at scrape time by a bounded collector: a few O(1) reads per scrape, no SCAN
of the keyspace, so a scrape costs the same with ten recordings or ten thousand."""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers import keys


class RedisCollector(Collector):
    """tapedeck_redis_up, pending finalizes and the oldest one's age, and each Celery queue's depth."""

    def __init__(self, client: redis.Redis, queues: Iterable[str]) -> None:
        self.client, self.queues = client, tuple(queues)

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
        pending, oldest, depths = facts
        yield GaugeMetricFamily("tapedeck_pending_finalizes", "Stopped recordings waiting for finalize", value=pending)
        yield GaugeMetricFamily("tapedeck_oldest_pending_finalize_seconds",
                                "Age of the oldest stopped recording not yet finalized (0 when none)", value=oldest)
        depth = GaugeMetricFamily("tapedeck_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        for queue, size in zip(self.queues, depths):
            depth.add_metric([queue], size)
        yield depth

    def _read(self) -> tuple[int, float, list[int]]:
        """One pipeline round trip: ZCARD, the oldest member's score, one LLEN per queue."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(keys.pending_finalize())
        pipe.zrange(keys.pending_finalize(), 0, 0, withscores=True)
        for queue in self.queues:
            pipe.llen(queue)  # kombu's Redis transport keeps a queue's messages in a list named after it
        pending, oldest, *depths = pipe.execute()
        age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
        return int(pending), age, [int(d) for d in depths]

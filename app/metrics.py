"""GET /metrics for Prometheus, summing every process of this node when PROMETHEUS_MULTIPROC_DIR is set."""
from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess

from app.services import services
from workers.chunks import ChunkReceipt
from workers.metrics import FAILED_UPLOADS, chunk_accepted
from workers.metrics_redis import RedisCollector

bp = Blueprint("metrics", __name__)
CHUNK_ENDPOINTS = frozenset({"chunks.upload_json", "chunks.upload_raw"})


@bp.get("/metrics")
def metrics() -> Response:
    """The exposition text; open like /healthz (scrape it from the private network, not the internet)."""
    return Response(generate_latest(_registry()) + generate_latest(_redis_registry()), mimetype=CONTENT_TYPE_LATEST)


def _redis_registry() -> CollectorRegistry:
    """Redis facts read now, through this process's client (never summed across processes: one reading)."""
    from tasks import celery_app

    conf = celery_app.conf
    queues = [conf.task_default_queue] + [q.name for q in (conf.task_queues or ()) if q.name != conf.task_default_queue]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(services().redis, queues))
    return registry


def _registry() -> CollectorRegistry:
    """In multiprocess mode a fresh registry reads every process's files; otherwise this process's registry."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def _start_clock() -> None:
    if request.endpoint in CHUNK_ENDPOINTS:
        g.chunk_started = time.perf_counter()


def count_accepted(receipt: ChunkReceipt, started: float | None = None) -> ChunkReceipt:
    """Called with the intake's receipt: a new chunk feeds the counters and the latency (from `started`, a
    perf_counter reading, or the clock the request hook started)."""
    if not receipt.duplicate:
        started = g.get("chunk_started") if started is None else started
        elapsed = time.perf_counter() - started if started is not None else 0.0
        chunk_accepted(receipt.upload.stream_type, len(receipt.upload.data), elapsed)
    return receipt


def _count_failure(response: Response) -> Response:
    """An error answer to a chunk upload counts as a failed upload, by status code."""
    if response.status_code >= 400 and request.endpoint in CHUNK_ENDPOINTS:
        FAILED_UPLOADS.labels(str(response.status_code)).inc()
    return response


def init_app(app: Flask) -> None:
    """Registers /metrics and the two hooks that count chunk uploads."""
    app.register_blueprint(bp)
    app.before_request(_start_clock)
    app.after_request(_count_failure)

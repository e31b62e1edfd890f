"""The worker's metrics: Celery signals feed workers/metrics.py, and the main process serves them on
WORKER_METRICS_PORT, summed over its pool processes (PROMETHEUS_MULTIPROC_DIR, set by the Procfile line)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from celery.signals import task_failure, task_postrun, task_prerun, worker_init, worker_process_shutdown
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from workers.metrics import FINALIZE_DURATION, TASK_FAILURES
from workers.settings import get_settings

log = logging.getLogger(__name__)
FINALIZE_TASK = "tapedeck.finalize_recording"
_started: dict[str, float] = {}
"""task id → perf_counter at prerun, in the pool process running it (one task at a time per process)."""


@worker_init.connect
def serve_metrics(**_: object) -> None:
    """Empties this worker's metrics folder (a previous run's files would be summed in) and serves the sums, on
    BIND_HOST like web and flower (loopback under `make run` in development; every interface when empty)."""
    settings = get_settings()
    port, address = settings.worker_metrics_port, settings.bind_host.strip() or "0.0.0.0"
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not port:
        return
    if not folder:
        log.warning("WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: no worker metrics served "
                    "(run the Procfile worker line, which sets it)")
        return
    for stale in Path(folder).glob("*.db"):
        if not stale.name.endswith(f"_{os.getpid()}.db"):
            stale.unlink(missing_ok=True)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        log.error("worker metrics not served: port %s: %s", port, exc.strerror or exc)
        return
    log.info("worker metrics on %s:%s/metrics", address, port)


@worker_process_shutdown.connect
def forget_process(pid: int | None = None, **_: object) -> None:
    """A pool process that ended: its live gauges leave the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        multiprocess.mark_process_dead(pid or os.getpid())


@task_prerun.connect
def _clock_in(task_id: str | None = None, **_: object) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _clock_out(task_id: str | None = None, task: object = None, **_: object) -> None:
    """Finalize wall time, whatever its outcome (a retry or a failure took that long too)."""
    started = _started.pop(task_id or "", None)
    if started is not None and getattr(task, "name", None) == FINALIZE_TASK:
        FINALIZE_DURATION.observe(time.perf_counter() - started)


@task_failure.connect
def _count_failure(sender: object = None, **_: object) -> None:
    TASK_FAILURES.labels(getattr(sender, "name", None) or "unknown").inc()

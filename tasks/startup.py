"""What a worker does once at start: checks before it consumes anything (worker_init), and sweeping the finalize
scratch a killed predecessor left on this disk (worker_ready)."""
from __future__ import annotations

import logging

from celery.signals import worker_init, worker_ready

from workers.errors import ConfigurationError
from workers.redis_persistence import verify_at_startup
from workers.resources import Resources
from workers.settings import get_settings
from workers.staging.sweep import sweep_scratch

log = logging.getLogger(__name__)


@worker_init.connect
def refuse_unsafe_redis(**_: object) -> None:
    """A production worker stops (exit 1) on a Redis that persists nothing: a restart would lose the queue."""
    try:
        verify_at_startup(get_settings(), log)
    except ConfigurationError as exc:
        log.critical("worker refuses to start: %s", exc.message)
        raise SystemExit(1) from None  # Celery logs and swallows Exceptions raised by signal handlers


@worker_ready.connect
def sweep_left_scratch(**_: object) -> None:
    """Drop scratch folders of recordings that are over and unlocked (a kill -9 mid-finalize leaves a whole fetched
    recording). In the main process, with resources of its own: the task processes' cached ones stay unbuilt."""
    try:
        resources = Resources.build(get_settings())
        try:
            sweep_scratch(resources.store, resources.staging)
        finally:
            resources.redis.close()
    except Exception:  # noqa: BLE001 - a failed sweep must not stop the worker; beat's cleanup sweeps again
        log.exception("scratch sweep at worker start failed")

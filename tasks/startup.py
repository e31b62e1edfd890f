"""Checks a worker makes once before it consumes anything (Celery's worker_init signal)."""
from __future__ import annotations

import logging

from celery.signals import worker_init

from workers.errors import ConfigurationError
from workers.redis_persistence import verify_at_startup
from workers.settings import get_settings

log = logging.getLogger(__name__)


@worker_init.connect
def refuse_unsafe_redis(**_: object) -> None:
    """A production worker stops (exit 1) on a Redis that persists nothing: a restart would lose the queue."""
    try:
        verify_at_startup(get_settings(), log)
    except ConfigurationError as exc:
        log.critical("worker refuses to start: %s", exc.message)
        raise SystemExit(1) from None  # Celery logs and swallows Exceptions raised by signal handlers

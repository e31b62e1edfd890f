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


@worker_init.connect
def survive_broker_loss_with_unacked_messages(**_: object) -> None:
    """Keep the worker alive when Redis goes away while it holds unacknowledged messages (a live step waiting out its
    countdown, or any task running under acks_late). kombu's Redis transport then closes the channel and tries to
    put those messages back through a connection it has already dropped, and the AttributeError that raises is not
    one of the connection errors Celery recovers from: the worker exits ("Unrecoverable error ... 'NoneType' object
    has no attribute 'hostname'"), and a process manager such as honcho stops the whole stack with it. Skipping
    that restore loses nothing: the messages stay in Redis's unacked hash (appendonly), and kombu puts them back
    once their visibility timeout passes; live steps are best effort anyway, finalize is idempotent."""
    from kombu.transport import redis as kombu_redis

    restore = kombu_redis.QoS.restore_unacked
    if getattr(restore, "tapedeck_guarded", False):
        return

    def restore_unacked(self, client=None):  # type: ignore[no-untyped-def]
        try:
            return restore(self, client)
        except AttributeError:
            log.warning("broker connection lost with %d unacknowledged message(s): left in Redis for their visibility "
                        "timeout to return them", len(self._delivered))
            return None

    restore_unacked.tapedeck_guarded = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked

"""A worker that consumes the `live` queue says so in Redis while it runs (workers/live/consumers.py), so intake
queues live steps only when one will run them; every worker logs at start whether it runs live steps."""
from __future__ import annotations

import logging

from celery.signals import worker_ready, worker_shutdown

from workers.live.consumers import Heartbeat, LiveConsumers
from workers.redis_client import for_settings
from workers.settings import get_settings

log = logging.getLogger(__name__)

LIVE_QUEUE = "live"
_heartbeat: list[Heartbeat] = []
"""The main process's heartbeat, once started (a list so the signal handlers share it without a global statement)."""


@worker_ready.connect
def announce_live_consumer(sender, **_: object) -> None:
    """In the worker's main process, once it consumes: announce it when it takes `live` and LIVE_FINALIZE is on."""
    settings = get_settings()
    consumes = LIVE_QUEUE in sender.app.amqp.queues.consume_from
    if not settings.live_steps:
        reason = "LIVE_FINALIZE is off" if not settings.live_finalize else "staging is in the object store"
        log.info("live steps: off on this worker (%s)%s", reason,
                 "; it consumes the live queue but runs nothing from it" if consumes else "")
        return
    if not consumes:
        log.info("live steps: this worker does not consume the live queue (its queues: %s); intake queues steps only "
                 "while another worker does", ",".join(sorted(sender.app.amqp.queues.consume_from)))
        return
    heartbeat = Heartbeat(LiveConsumers(for_settings(settings, socket_timeout=5)), sender.hostname,
                          settings.live_consumer_refresh_seconds)
    heartbeat.start()
    _heartbeat.append(heartbeat)
    log.info("live steps: this worker consumes the live queue, announced as %s (renewed every %.0f s)",
             sender.hostname, settings.live_consumer_refresh_seconds)


@worker_shutdown.connect
def withdraw_live_consumer(**_: object) -> None:
    """A clean shutdown withdraws at once; a killed worker's announcement lapses after three missed renewals."""
    while _heartbeat:
        _heartbeat.pop().stop()

"""Celery settings, read from the environment as Celery expects. Chosen so no recording is ever lost.

The variables are parsed by workers.settings.CelerySettings (pydantic-settings, as for the rest of tapedeck), so a
bad value fails start-up naming it and REDIS_URL's default is the one the app uses.

Trade-off on `visibility_timeout`: the Redis transport redelivers a task that is not acknowledged within
it — even one still running. It is set above the hard time limit so a long finalize is never run twice
concurrently by redelivery. A task whose worker was `kill -9`ed would then wait that long to come back,
so recovery does not rely on it: finalize holds a Redis lock renewed every FINALIZE_LOCK_SECONDS/3, and
the beat task `tapedeck.recover_stalled` requeues any stopped recording whose lock has expired. A
redelivery that arrives later finds the recording completed (or the lock held) and exits.
"""
from __future__ import annotations

import os

from celery.schedules import schedule
from kombu import Exchange, Queue

from workers.redis_client import celery_broker
from workers.settings import CelerySettings

_env = CelerySettings.from_env()

broker_url, _sentinel_options = celery_broker(_env.redis_url, _env.redis_sentinels, _env.redis_sentinel_master,
                                              _env.redis_sentinel_password)
"""With REDIS_SENTINELS, broker and results use kombu's sentinel:// transport and follow the master."""
result_backend = broker_url

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

task_acks_late = True
"""Acknowledge after the task finishes, so a crash mid-task leaves the message to be delivered again."""
task_reject_on_worker_lost = True
"""A worker process killed mid-task requeues the message instead of acking it."""
worker_prefetch_multiplier = 1
"""Long jobs: a worker reserves one task at a time, others stay available to idle workers."""
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True
result_expires = 7 * 24 * 3600
result_extended = True
broker_connection_retry_on_startup = True

FINALIZE_TIME_LIMIT = _env.finalize_time_limit_seconds
task_soft_time_limit = FINALIZE_TIME_LIMIT
task_time_limit = FINALIZE_TIME_LIMIT + 120

broker_transport_options = {
    "visibility_timeout": _env.broker_visibility_timeout_seconds or task_time_limit + 600,
    **_sentinel_options,
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}, **_sentinel_options}

task_default_queue = "celery"
QUEUE_NAMES = ("celery", "finalize", "transcode", "webhooks", "maintenance", "live")
task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUE_NAMES)
"""Each queue bound to its own exchange and routing key: with kombu's Redis transport a shared binding would copy a
message into every queue. A worker without -Q consumes all; `-Q finalize` (or transcode, webhooks, maintenance) runs
a worker for that queue only, so a flood of webhooks or a purge never waits in front of a finalize. `transcode`
holds the finalizes of MP4 recordings (tasks.finalize.enqueue_finalize sends them there explicitly; the route below
is the default for the rest), so a CPU-bound re-encode never delays a plain WebM finalize."""


def _route(queue: str) -> dict:
    """Only the queue's name: its exchange and key come from task_queues, so a caller's explicit queue= still wins
    whole (naming exchange and key here too would send a message for queue X to queue Y's exchange)."""
    return {"queue": queue}


task_routes = {
    "tapedeck.finalize_recording": _route("finalize"),
    "tapedeck.deliver_webhooks": _route("webhooks"),
    "tapedeck.live_step": _route("live"),
    **{name: _route("maintenance") for name in ("tapedeck.recover_stalled", "tapedeck.cleanup_staging",
                                               "tapedeck.purge_expired", "tapedeck.purge_recording",
                                               "tapedeck.auto_stop", "tapedeck.abort_orphaned_uploads",
                                               "tapedeck.compact_finished")},
}

RECOVER_EVERY_SECONDS = _env.recover_every_seconds
CLEANUP_EVERY_SECONDS = _env.cleanup_every_seconds
AUTO_STOP_EVERY_SECONDS = _env.auto_stop_every_seconds
"""How often beat compares active recordings with MAX_RECORDING_SECONDS and IDLE_STOP_SECONDS."""
beat_schedule = {
    "recover-stalled-finalizes": {"task": "tapedeck.recover_stalled", "schedule": schedule(RECOVER_EVERY_SECONDS)},
    "cleanup-staging": {"task": "tapedeck.cleanup_staging", "schedule": schedule(CLEANUP_EVERY_SECONDS)},
    "purge-expired": {"task": "tapedeck.purge_expired", "schedule": schedule(CLEANUP_EVERY_SECONDS)},  # RETENTION_DAYS
    "auto-stop": {"task": "tapedeck.auto_stop", "schedule": schedule(AUTO_STOP_EVERY_SECONDS)},
    "abort-orphaned-uploads": {"task": "tapedeck.abort_orphaned_uploads", "schedule": schedule(CLEANUP_EVERY_SECONDS)},
    "compact-finished": {"task": "tapedeck.compact_finished", "schedule": schedule(CLEANUP_EVERY_SECONDS)},
}
beat_schedule_filename = _env.celery_beat_schedule_file
os.makedirs(os.path.dirname(os.path.abspath(beat_schedule_filename)), exist_ok=True)

"""Beat tasks, thin: each runs one workers.maintenance function and queues what it decided (finalizes).

The policies live in workers/maintenance/; here are only what needs Celery: the broker's view of a finalize
task (still queued? held by a live worker? started?) and the enqueueing.
"""
from __future__ import annotations

import json
import logging
import uuid

from celery import shared_task

from tasks.finalize import FINALIZE_QUEUES, enqueue_finalize
from tasks.lifecycle import finalize_now_if_complete
from tasks.runtime import runtime
from workers import keys
from workers.maintenance.autostop import stop_over_limits
from workers.maintenance.compaction import compact_finished
from workers.maintenance.recovery import TaskFacts, stalled
from workers.maintenance.staging_cleanup import cleanup_staging as _cleanup_staging
from workers.maintenance.uploads import abort_checkpointed, abort_listed
from workers.resources import Resources

log = logging.getLogger(__name__)

WAITING_QUEUES = (*FINALIZE_QUEUES, "celery")
"""Where a finalize message can wait: the queues enqueue_finalize picks by format, and the default one (old
routing)."""
QUEUE_SCAN_LIMIT = 10_000
"""Messages read per queue to find waiting finalizes; a longer backlog counts every candidate as waiting."""
INSPECT_TIMEOUT_SECONDS = 1.0
NOT_STARTED = ("PENDING", "RETRY")


def _new_task_id() -> str:
    return str(uuid.uuid4())


def _queued_task_ids(client) -> set[str] | None:
    """Ids of finalize messages waiting in their queues; None when a queue is longer than we read."""
    found: set[str] = set()
    for queue in WAITING_QUEUES:
        name = keys.celery_queue(queue)
        if client.llen(name) > QUEUE_SCAN_LIMIT:
            return None
        for raw in client.lrange(name, 0, QUEUE_SCAN_LIMIT - 1):
            try:
                found.add(json.loads(raw)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                continue
    return found


def _held_by_live_workers(app, task_ids: list[str]) -> set[str]:
    """Ids a live worker holds (running, prefetched, or waiting for its countdown): one broadcast."""
    replies = app.control.inspect(timeout=INSPECT_TIMEOUT_SECONDS).query_task(*task_ids) or {}
    return {task_id for per_worker in replies.values() for task_id in (per_worker or {})}


def _task_facts(app, client, task_ids: list[str]) -> dict[str, TaskFacts]:
    queued = _queued_task_ids(client)
    unknown = [t for t in task_ids if queued is not None and t not in queued]
    held = _held_by_live_workers(app, unknown) if unknown else set()
    return {t: TaskFacts(started=app.AsyncResult(t).state not in NOT_STARTED,
                         waiting=queued is None or t in queued or t in held) for t in task_ids}


@shared_task(name="tapedeck.recover_stalled", bind=True)
def recover_stalled(self) -> list[str]:
    """Requeue stopped recordings whose finalize no worker runs or holds (e.g. after kill -9 of every worker)."""
    rt = runtime()
    decisions = stalled(rt.store, rt.settings.finalize_lock_seconds,
                        lambda ids: _task_facts(self.app, rt.redis, ids), _new_task_id)
    for decision in decisions:
        enqueue_finalize(decision.recording_id, decision.task_id, room=decision.room, fmt=decision.fmt)
    return [d.recording_id for d in decisions]


@shared_task(name="tapedeck.cleanup_staging")
def cleanup_staging() -> list[str]:
    """Free disk: staged chunks of recordings completed longer ago than STAGING_RETENTION_SECONDS."""
    rt = runtime()
    return _cleanup_staging(rt.store, rt.staging, rt.settings.staging_retention_seconds)


@shared_task(name="tapedeck.auto_stop")
def auto_stop(ids: list[str] | None = None) -> list[str]:
    """Stop recordings past MAX_RECORDING_SECONDS or IDLE_STOP_SECONDS and queue their finalize (`ids`: check
    only those, e.g. an operator's pick)."""
    rt = runtime()
    s = rt.settings
    stopped = stop_over_limits(rt.redis, s.max_recording_seconds, s.idle_stop_seconds, s.finalize_grace_seconds,
                               _new_task_id, ids=ids)
    for item in stopped:
        finalize_after_stop(rt, item.recording_id, item.task_id, item.room, item.reason)
    return [item.recording_id for item in stopped]


def finalize_after_stop(resources: Resources, recording_id: str, task_id: str, room: str | None, reason: str) -> None:
    """What a stop by beat or an operator is followed by, as the host's stop is: the state event, then finalize
    after the grace window (at once when every stream already declared its final chunk)."""
    resources.events.publish(recording_id, {"type": "state", "state": "finalizing", "stopReason": reason})
    if not finalize_now_if_complete(resources.redis, recording_id):
        fmt = resources.redis.hget(keys.recording(recording_id), "format")
        enqueue_finalize(recording_id, task_id, countdown=resources.settings.finalize_grace_seconds, room=room,
                         fmt=fmt.decode() if fmt else None)


@shared_task(name="tapedeck.abort_orphaned_uploads")
def abort_orphaned_uploads() -> list[str]:
    """Abort multipart/resumable uploads whose recording is completed, failed or gone."""
    rt = runtime()
    aborted = abort_checkpointed(rt.redis, rt.provider)
    return aborted + abort_listed(rt.redis, rt.provider, rt.settings.orphan_upload_min_age_seconds)


@shared_task(name="tapedeck.compact_finished")
def compact_finished_recordings() -> list[str]:
    """Keep only a compact summary in Redis of recordings completed longer ago than REDIS_COMPACT_AFTER_SECONDS."""
    rt = runtime()
    return compact_finished(rt.store, rt.settings.compact_after_seconds)

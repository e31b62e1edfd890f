"""Beat tasks: requeue finalizes whose worker died, and delete staged chunks of long-completed recordings."""
from __future__ import annotations

import logging
import time
import uuid

from celery import shared_task

from tasks.finalize import enqueue_finalize
from tasks.runtime import runtime
from workers import keys
from workers.lock import is_locked
from workers.state import FINAL_STATES

log = logging.getLogger(__name__)


@shared_task(name="tapedeck.recover_stalled")
def recover_stalled() -> list[str]:
    """Requeue stopped recordings that no live worker holds (e.g. after kill -9 of every worker)."""
    rt = runtime()
    now = time.time()
    quiet_for = rt.settings.finalize_lock_seconds
    requeued = []
    for recording_id in rt.store.pending(older_than=now):
        rec = rt.store.get(recording_id)
        if rec is None or rec["state"] in FINAL_STATES:
            rt.redis.zrem(keys.pending_finalize(), recording_id)
            continue
        if is_locked(rt.redis, keys.finalize_lock(recording_id)):
            continue
        last_touch = max(float(rec.get("updatedAt") or 0), float(rec.get("acceptUntil") or 0))
        if now - last_touch < quiet_for:
            continue  # its task may simply be queued behind others
        task_id = str(uuid.uuid4())
        rt.store.update(recording_id, taskId=task_id)
        enqueue_finalize(recording_id, task_id)
        requeued.append(recording_id)
        log.warning("requeued stalled finalize of %s as %s", recording_id, task_id)
    return requeued


@shared_task(name="tapedeck.cleanup_staging")
def cleanup_staging() -> list[str]:
    """Free disk: staged chunks of recordings completed longer ago than STAGING_RETENTION_SECONDS.
    Failed recordings are never cleaned: an operator may requeue them."""
    rt = runtime()
    cutoff = time.time() - rt.settings.staging_retention_seconds
    removed = []
    for raw in rt.redis.zrangebyscore(keys.completed_index(), "-inf", cutoff):
        recording_id = raw.decode()
        rt.staging.remove_recording(recording_id)
        rt.store.delete(recording_id)
        removed.append(recording_id)
    return removed

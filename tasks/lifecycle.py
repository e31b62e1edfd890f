"""Thin lifecycle tasks: purge a deleted recording (the work is in workers/purge.py)."""
from __future__ import annotations

import logging

import redis
from celery import shared_task

from storage_providers.base import StorageUnavailableError
from tasks.finalize import OUTAGE_RETRY, enqueue_finalize
from tasks.labels import argsrepr
from tasks.runtime import runtime
from tasks.webhooks import enqueue_webhook
from workers.lifecycle_final import close_if_complete, finalize_target
from workers.purge import claim_expired, purge

log = logging.getLogger(__name__)


def send_recording_deleted(recording_id: str, room: str) -> None:
    """The one place the recording.deleted webhook is sent from, once the purge finished; a webhook problem is
    logged and never undoes or fails the deletion."""
    try:
        enqueue_webhook(recording_id, "recording.deleted", room, {"recordingId": recording_id, "room": room})
    except Exception:  # noqa: BLE001 - the recording is gone either way; the audit line of the purge stays
        log.exception("recording.deleted webhook for %s could not be queued", recording_id)


@shared_task(name="tapedeck.purge_recording", acks_late=True,
             autoretry_for=(redis.ConnectionError, StorageUnavailableError, OSError), **OUTAGE_RETRY)
def purge_recording(recording_id: str) -> bool:
    """Remove a recording everywhere; retried with backoff while Redis or storage is unreachable."""
    rt = runtime()
    room = purge(rt.redis, rt.provider, rt.staging, recording_id)
    if room is not None:
        send_recording_deleted(recording_id, room)
    return room is not None


def enqueue_purge(recording_id: str, room: str | None = None) -> None:
    purge_recording.apply_async(args=[recording_id], argsrepr=argsrepr(recording_id, room))


@shared_task(name="tapedeck.purge_expired")
def purge_expired(now: float | None = None) -> list[str]:
    """Beat: delete completed and failed recordings past RETENTION_DAYS (unset: keep forever)."""
    rt = runtime()
    if rt.settings.retention_days is None:
        return []
    removed = []
    for recording_id in claim_expired(rt.redis, rt.settings.retention_days, now):
        room = purge(rt.redis, rt.provider, rt.staging, recording_id)
        if room is not None:
            send_recording_deleted(recording_id, room)
            removed.append(recording_id)
    return removed


def finalize_now_if_complete(client: redis.Redis, recording_id: str) -> bool:
    """After stop or a late chunk: when every stream declared its final chunk and holds all before it, close the
    grace window and queue finalize now (the delayed message finds the work done and exits)."""
    if not close_if_complete(client, recording_id):
        return False
    task_id, room, fmt = finalize_target(client, recording_id)
    enqueue_finalize(recording_id, task_id, room=room, fmt=fmt)
    return True

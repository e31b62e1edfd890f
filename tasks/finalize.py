"""tapedeck.finalize_recording: the idempotency guard, retry policy and Celery progress around workers.finalize."""
from __future__ import annotations

import logging

import redis
from celery import shared_task

from tasks.labels import argsrepr
from tasks.runtime import runtime
from tasks.webhooks import send_final_state
from workers import keys
from workers.errors import LockLost
from workers.lock import heartbeat_lock
from workers.state import State

log = logging.getLogger(__name__)

OUTAGE_RETRY = {"max_retries": 8, "retry_backoff": 2, "retry_backoff_max": 300, "retry_jitter": True}
"""Celery's own backoff for a task retried while Redis or storage is unreachable: 2 s doubling up to 5 min, each wait
drawn at random below that (full jitter), so many recordings retrying after one shared outage spread out."""


@shared_task(bind=True, name="tapedeck.finalize_recording", autoretry_for=(redis.ConnectionError,), **OUTAGE_RETRY)
def finalize_recording(self, recording_id: str) -> dict:
    rt = runtime()
    with heartbeat_lock(rt.redis, keys.finalize_lock(recording_id), rt.settings.finalize_lock_seconds) as held:
        if not held:
            log.info("finalize %s already running elsewhere; this delivery exits", recording_id)
            return {"recordingId": recording_id, "skipped": "already running"}
        try:
            state = rt.finalizer.run(recording_id, listener=lambda event: _celery_progress(self, event), guard=held.check)
        except LockLost:
            log.warning("finalize %s lost its lock; stopped before writing, the holder finishes it", recording_id)
            return {"recordingId": recording_id, "skipped": "lock lost"}
        except redis.ConnectionError:
            raise  # Redis is away, not this recording broken: Celery retries it (OUTAGE_RETRY)
        except Exception as exc:
            log.exception("finalize %s crashed", recording_id)
            rt.store.finish(recording_id, State.FAILED, error=f"internal error during finalize ({type(exc).__name__})")
            send_final_state(recording_id)
            raise
    send_final_state(recording_id)
    return {"recordingId": recording_id, "state": state}


def _celery_progress(task, event: dict) -> None:
    if task.request.id and not task.request.is_eager:
        task.update_state(state="PROGRESS", meta=event)


FINALIZE_QUEUES = ("finalize", "transcode")
"""Where finalize is sent: `transcode` for MP4 output (which may re-encode VP8/Opus to H.264/AAC, CPU-bound at
about 0.8x the media's length), `finalize` for the rest, so a plain WebM finalize never waits behind a transcode."""


def finalize_queue(fmt: str | None) -> str:
    """The queue a recording of output format `fmt` is finalized on (unknown or missing: `finalize`)."""
    return "transcode" if fmt == "mp4" else "finalize"


def enqueue_finalize(recording_id: str, task_id: str, countdown: float = 0, room: str | None = None,
                     fmt: str | None = None) -> None:
    """Queue finalize under a known task id (stored on the recording, so clients can follow it) on the queue its
    output format `fmt` picks (explicit, so it wins over task_routes); `room` only labels the job in Flower."""
    finalize_recording.apply_async(args=[recording_id], task_id=task_id, countdown=countdown or None,
                                   queue=finalize_queue(fmt), argsrepr=argsrepr(recording_id, room))

"""tapedeck.live_step: fold newly arrived chunks into each participant's live output while the room records
(workers/live/); queued from chunk intake at most once per LIVE_STEP_SECONDS per recording."""
from __future__ import annotations

import logging

import redis
from celery import shared_task

from tasks.runtime import runtime
from workers import keys
from workers.state import State

log = logging.getLogger(__name__)

RECORDING_STATES = frozenset({State.RECORDING.value, State.PAUSED.value})
"""A live step only runs ahead of finalize; once stopped, finalize folds the tail itself."""


@shared_task(name="tapedeck.live_step", ignore_result=True)
def live_step(recording_id: str) -> None:
    """Best effort by design: a step that fails or never runs only leaves more to finalize (or to batch)."""
    rt = runtime()
    live = rt.finalizer.live
    if live is None:
        return
    state = rt.redis.hget(keys.recording(recording_id), "state")
    if state is None or state.decode() not in RECORDING_STATES:
        return
    try:
        live.step(recording_id)
    except redis.RedisError:
        log.warning("live step of %s skipped: Redis unavailable", recording_id)


def schedule_live_step(client: redis.Redis, recording_id: str, every_seconds: float) -> None:
    """One SET NX per chunk: the first chunk of each period queues a step that runs at its end."""
    if client.set(keys.live_due(recording_id), b"1", nx=True, px=max(1, int(every_seconds * 1000))):
        live_step.apply_async(args=[recording_id], countdown=every_seconds)

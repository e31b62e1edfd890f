"""tapedeck.live_step: fold newly arrived chunks into each participant's live output while the room records
(workers/live/); queued from chunk intake at most once per LIVE_STEP_SECONDS per recording (LIVE_TRANSCODE_STEP_SECONDS
for one transcoded while it records)."""
from __future__ import annotations

import functools
import logging
import threading

import redis
from celery import shared_task

from tasks.runtime import runtime
from workers import keys
from workers.live.consumers import Due, LiveConsumers
from workers.metrics import LIVE_STEPS_UNQUEUED
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


def schedule_live_step(client: redis.Redis, recording_id: str, every_seconds: float,
                       transcode_every_seconds: float) -> bool:
    """One script per chunk (SET NX, and only when that sets it, a look at the live consumers): the first chunk of
    each period queues a step that runs at its end, when a worker consumes `live`. The period is
    `transcode_every_seconds` for a recording whose output is transcoded (`format: mp4`). True when a step was
    queued."""
    due, period = _consumers(client).due(recording_id, every_seconds, transcode_every_seconds)
    if due is Due.QUEUE:
        _NO_CONSUMER_LOGGED.clear()
        live_step.apply_async(args=[recording_id], countdown=period)
        return True
    if due is Due.NO_CONSUMER:
        LIVE_STEPS_UNQUEUED.inc()
        if not _NO_CONSUMER_LOGGED.is_set():  # once until a consumer is seen again, not once per recording
            _NO_CONSUMER_LOGGED.set()
            log.warning("live steps not queued: no worker consumes the live queue (stops take the batch path; "
                        "give a worker on the node that holds the chunks the live queue)")
    return False


_NO_CONSUMER_LOGGED = threading.Event()


@functools.lru_cache(maxsize=4)
def _consumers(client: redis.Redis) -> LiveConsumers:
    """One per Redis client: its scripts are registered once, not per chunk."""
    return LiveConsumers(client)

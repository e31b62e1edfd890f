"""Drop finalize scratch a dead worker left behind (issue 14).

On STAGING_BACKEND=object-store a finalize fetches a whole recording's chunks into STAGING_DIR/<recordingId>/ and
only its own finished() removes that folder: a worker killed mid-finalize leaves the copy forever. This sweep runs
when a worker starts and on every beat cleanup. It removes a folder only when its recording is completed, failed or
gone from Redis AND no finalize holds the recording's lock, so a live finalize (which holds the lock from before it
fetches until after finished()) or a recording still being recorded is never touched. The folder is only a copy:
the staged chunks stay in the bucket until their retention, so a later requeue fetches them again."""
from __future__ import annotations

import logging

import redis

from workers import keys
from workers.staging.base import Staging
from workers.state import RecordingStore, State

log = logging.getLogger(__name__)

SWEPT_STATES = (State.COMPLETED.value, State.FAILED.value)
"""States whose scratch no one still needs; a missing recording (deleted, or forgotten by Redis) counts too."""


def sweep_scratch(store: RecordingStore, staging: Staging) -> list[str]:
    """Remove the leftover scratch folders of recordings that are over and unlocked; returns their ids. Redis
    unreachable: nothing is removed (the next sweep tries again)."""
    removed = []
    for recording_id in staging.scratch_recordings():
        try:
            record = store.get(recording_id)
            if record is not None and record.get("state") not in SWEPT_STATES:
                continue
            if store.redis.exists(keys.finalize_lock(recording_id)):
                continue  # a finalize (a requeue of a failed one, say) is using the folder right now
        except redis.RedisError as exc:
            log.warning("scratch sweep stopped, Redis unreachable: %s", exc)
            break
        staging.finished(recording_id)
        removed.append(recording_id)
    if removed:
        log.info("removed finalize scratch of %d recordings", len(removed),
                 extra={"event": "scratch_swept", "count": len(removed)})
    return removed

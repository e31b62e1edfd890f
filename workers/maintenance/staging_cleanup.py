"""Free disk: staged chunks of recordings completed longer ago than STAGING_RETENTION_SECONDS, and the finalize
scratch a killed worker left (workers/staging/sweep.py).

Failed recordings' staged chunks are never cleaned: an operator may requeue them.
"""
from __future__ import annotations

import logging
import time

from workers import keys
from workers.staging.base import Staging
from workers.staging.sweep import sweep_scratch
from workers.state import RecordingStore

log = logging.getLogger(__name__)


def cleanup_staging(store: RecordingStore, staging: Staging, retention_seconds: float,
                    now: float | None = None) -> list[str]:
    """Remove staged chunks and the chunk index of each recording completed before the cutoff; returns ids.
    Leftover finalize scratch of recordings that are over is swept too (logged, not returned)."""
    sweep_scratch(store, staging)
    cutoff = (time.time() if now is None else now) - retention_seconds
    removed = []
    for raw in store.redis.zrangebyscore(keys.completed_index(), "-inf", cutoff):
        recording_id = raw.decode()
        staging.remove_recording(recording_id)
        store.delete(recording_id)
        removed.append(recording_id)
    if removed:
        log.info("removed staged chunks of %d completed recordings", len(removed),
                 extra={"event": "staging_cleaned", "count": len(removed)})
    return removed

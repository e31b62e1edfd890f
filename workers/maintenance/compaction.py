"""Shrink the Redis state of long-completed recordings to what their status shows: one hash, no sub-keys.

A completed recording keeps per-stream chunk indexes, counters, runs of missing sequences and an event
stream; after REDIS_COMPACT_AFTER_SECONDS only the status matters, so the participants part of the status is
frozen into the hash (participantsSummary) and every sub-key goes. Failed recordings keep everything: an
operator may requeue them, and a later completion compacts them in turn. A watermark on the ended index
means each run reads only what ended since the last one.
"""
from __future__ import annotations

import json
import logging
import time

from workers import keys
from workers.state import RecordingStore
from workers.status import participant_entries

log = logging.getLogger(__name__)

BATCH = 500
"""Recordings looked at per beat run; the watermark carries the rest to the next."""
SCAN_COUNT = 500


def compact(store: RecordingStore, recording_id: str, now: float) -> bool:
    """Freeze one completed recording's participants into its hash and drop its sub-keys; False if not due."""
    rec = store.get(recording_id)
    if rec is None or rec["state"] != "completed" or rec.get("compactedAt"):
        return False
    errors = json.loads(rec.get("participantErrors") or "{}")
    summary = participant_entries(store, recording_id, errors, rec=rec)
    client = store.redis
    store.update(recording_id, participantsSummary=json.dumps(summary), compactedAt=repr(now))
    doomed = [k for pattern in (keys.recording_keys_pattern(recording_id), keys.upload_sessions_pattern(recording_id))
              for k in client.scan_iter(match=pattern, count=SCAN_COUNT)]
    if doomed:
        client.delete(*doomed)
    log.info("compacted %s (%d keys)", recording_id, len(doomed),
             extra={"event": "recording_compacted", "recordingId": recording_id, "room": rec["room"]})
    return True


def compact_finished(store: RecordingStore, after_seconds: float, now: float | None = None) -> list[str]:
    """Compact recordings that ended before now - after_seconds and after the watermark; returns their ids."""
    now = time.time() if now is None else now
    client = store.redis
    mark = client.get(keys.compaction_watermark())
    entries = client.zrangebyscore(keys.ended_index(), float(mark) if mark else "-inf", now - after_seconds,
                                   start=0, num=BATCH, withscores=True)
    done = [raw.decode() for raw, _score in entries if compact(store, raw.decode(), now)]
    if entries:
        client.set(keys.compaction_watermark(), repr(entries[-1][1]))
    return done


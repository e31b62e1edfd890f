"""Abort multipart/resumable uploads nobody will finish: their recording is completed, failed or gone.

Decided by state, never by age alone: work-ahead uploads of a live call run for hours, and a finalizing
recording's upload resumes from its checkpoint. Two sources: the checkpoints finalize and live steps keep in Redis
(S3 multipart ids, GCS session URLs and parts sent ahead), and the backend's own list of incomplete uploads under
recordings/ (S3 multipart uploads, GCS parts sent ahead), which also finds uploads whose checkpoint expired or was
lost with Redis; those must be older than ORPHAN_UPLOAD_MIN_AGE_SECONDS too, so an upload that has just begun is
never raced.
"""
from __future__ import annotations

import logging
import time

import redis

from storage_providers.base import StorageProvider
from workers import keys
from workers.checkpoints import RedisCheckpoint
from workers.lock import is_locked

log = logging.getLogger(__name__)

FINISHED = ("completed", "failed")
SCAN_COUNT = 500
RECORDINGS_PREFIX = "recordings/"


def _unowned(client: redis.Redis, recording_id: str) -> bool:
    """True when no one will finish an upload of this recording: it is final or gone, and no finalize runs."""
    state = client.hget(keys.recording(recording_id), "state")
    if state is not None and state.decode() not in FINISHED:
        return False
    return not is_locked(client, keys.finalize_lock(recording_id))


def abort_checkpointed(client: redis.Redis, provider: StorageProvider) -> list[str]:
    """Abort every upload a Redis checkpoint remembers for a final or gone recording; returns the object keys."""
    aborted = []
    for raw in client.scan_iter(match=keys.all_upload_sessions_pattern(), count=SCAN_COUNT):
        parts = keys.upload_session_parts(raw.decode())
        if parts is None or not _unowned(client, parts[0]):
            continue
        recording_id, object_key = parts
        provider.abort_upload(object_key, RedisCheckpoint(client, recording_id, object_key))
        log.info("aborted orphaned upload of %s", object_key,
                 extra={"event": "upload_aborted", "recordingId": recording_id, "key": object_key})
        aborted.append(object_key)
    return aborted


def recording_of(object_key: str) -> str | None:
    """The recording id in recordings/<room>/<recordingId>/<file>, or None for any other key."""
    parts = object_key.split("/")
    return parts[2] if len(parts) >= 4 and parts[0] == "recordings" and parts[2] else None


def abort_listed(client: redis.Redis, provider: StorageProvider, min_age_seconds: float,
                 now: float | None = None) -> list[str]:
    """Abort the backend's incomplete uploads under recordings/ of final or gone recordings, old enough."""
    now = time.time() if now is None else now
    aborted = []
    for upload in provider.incomplete_uploads(RECORDINGS_PREFIX):
        recording_id = recording_of(upload.key)
        if recording_id is None or now - upload.initiated < min_age_seconds or not _unowned(client, recording_id):
            continue
        provider.abort_incomplete(upload)
        log.info("aborted orphaned multipart upload of %s", upload.key,
                 extra={"event": "upload_aborted", "recordingId": recording_id, "key": upload.key})
        aborted.append(upload.key)
    return aborted

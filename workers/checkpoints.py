"""Upload checkpoints in Redis, so a retried or redelivered upload resumes its multipart/resumable session."""
from __future__ import annotations

import json

import redis

from workers import keys

CHECKPOINT_TTL_SECONDS = 7 * 24 * 3600
"""S3 multipart ids and GCS session URLs expire within a week; so does our memory of them."""


class RedisCheckpoint:
    """Implements storage_providers.UploadCheckpoint for one (recording, object key)."""

    def __init__(self, client: redis.Redis, recording_id: str, object_key: str) -> None:
        self.redis = client
        self.key = keys.upload_session(recording_id, object_key)

    def load(self) -> dict | None:
        raw = self.redis.get(self.key)
        return json.loads(raw) if raw else None

    def save(self, state: dict) -> None:
        self.redis.set(self.key, json.dumps(state), ex=CHECKPOINT_TTL_SECONDS)

    def clear(self) -> None:
        self.redis.delete(self.key)

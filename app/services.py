"""The shared resources one app instance uses, built once in create_app and kept in app.extensions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import redis
from flask import current_app

from storage_providers import StorageProvider, create_provider
from workers.chunks import ChunkIntake
from workers.events import EventPublisher
from workers.settings import Settings
from workers.staging import ChunkStaging
from workers.state import RecordingStore

EXTENSION_KEY = "tapedeck"


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    store: RecordingStore
    staging: ChunkStaging
    intake: ChunkIntake
    provider: StorageProvider
    events: EventPublisher

    @classmethod
    def build(cls, settings: Settings, env: Mapping[str, str] | None = None) -> "Services":
        client = redis.Redis.from_url(settings.redis_url, health_check_interval=30, socket_timeout=10)
        store = RecordingStore(client)
        staging = ChunkStaging(settings.staging_dir)
        return cls(
            settings=settings,
            redis=client,
            store=store,
            staging=staging,
            intake=ChunkIntake(store, staging, settings.max_chunk_bytes),
            provider=create_provider(settings.storage_provider, env),
            events=EventPublisher(client, settings.event_stream_maxlen),
        )

    def download_url(self, key: str) -> str | None:
        return self.provider.download_url(key, self.settings.download_url_ttl_seconds)


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]

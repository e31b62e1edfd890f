"""Per-process resources for tasks, built on first use (after the prefork fork, never at import)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis

from storage_providers import StorageProvider, create_provider
from workers.events import EventPublisher
from workers.finalize import Finalizer
from workers.settings import Settings, get_settings
from workers.staging import ChunkStaging
from workers.state import RecordingStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: RecordingStore
    staging: ChunkStaging
    provider: StorageProvider
    finalizer: Finalizer


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30, socket_timeout=30)
    store = RecordingStore(client)
    staging = ChunkStaging(settings.staging_dir)
    provider = create_provider(settings.storage_provider)
    publisher = EventPublisher(client, settings.event_stream_maxlen)
    finalizer = Finalizer(store=store, staging=staging, provider=provider, publisher=publisher, settings=settings)
    return Runtime(settings=settings, redis=client, store=store, staging=staging, provider=provider, finalizer=finalizer)

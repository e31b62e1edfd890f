"""The shared resources of one process (web or worker), built in one place so both edges wire them alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import redis

from storage_providers import StorageProvider, create_provider
from storage_providers.base import StorageConfigError
from workers.chunks import ChunkIntake
from workers.download_urls import DownloadUrls
from workers.errors import ConfigurationError
from workers.events import EventPublisher
from workers.finalize import Finalizer
from workers.live.state import LiveStates
from workers.live.step import LiveFinalizer
from workers.redis_client import for_settings
from workers.settings import Settings
from workers.staging import Staging, create_staging
from workers.state import RecordingStore


@dataclass(frozen=True)
class Resources:
    """Everything a web or worker process shares: one name, every field present (intake and finalizer are cheap)."""

    settings: Settings
    redis: redis.Redis
    store: RecordingStore
    staging: Staging
    provider: StorageProvider
    events: EventPublisher
    intake: ChunkIntake
    finalizer: Finalizer
    urls: DownloadUrls

    @classmethod
    def build(cls, settings: Settings, env: Mapping[str, str] | None = None, socket_timeout: float = 30) -> "Resources":
        """Nothing connects here: the Redis pool and the storage SDK client open on first use (prefork-safe)."""
        client = for_settings(settings, socket_timeout=socket_timeout, health_check_interval=30)
        try:
            provider = create_provider(settings.storage_provider, env)
        except StorageConfigError as exc:  # one configuration error past this edge, naming the variable
            raise ConfigurationError(str(exc)) from exc
        store = RecordingStore(client)
        staging = create_staging(settings.staging_backend, settings.staging_dir, settings.staging_min_free_bytes, provider)
        events = EventPublisher(client, settings.event_stream_maxlen)
        return cls(
            settings=settings, redis=client, store=store, staging=staging, provider=provider, events=events,
            intake=ChunkIntake(store, staging, settings.max_chunk_bytes, settings.max_participants),
            finalizer=Finalizer(store=store, staging=staging, provider=provider, publisher=events, settings=settings,
                                live=LiveFinalizer(store, staging, LiveStates(client), settings.thumbnail_offset_seconds,
                                                   settings.thumbnail_width, provider=provider, mp4=settings.mp4)
                                if settings.live_finalize else None),
            urls=DownloadUrls(provider.download_url, settings.download_url_ttl_seconds),
        )

    def download_url(self, key: str) -> str | None:
        """A link for a stored object (reused while young); None while the provider cannot mint one."""
        return self.urls.url(key)

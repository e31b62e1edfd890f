"""Chunk staging: one interface (base.Staging), chosen by STAGING_BACKEND: local disk (local.ChunkStaging) or the
storage provider's bucket (object_store.ObjectStoreStaging)."""
from __future__ import annotations

from pathlib import Path

from storage_providers import StorageProvider
from workers.staging.base import CHUNK_NAME, RECORDING_FILE, FoundChunk, StagedChunk, Staging
from workers.staging.local import ChunkStaging
from workers.staging.object_store import ObjectStoreStaging

BACKENDS = ("local", "object-store")

__all__ = ["BACKENDS", "CHUNK_NAME", "RECORDING_FILE", "ChunkStaging", "FoundChunk", "ObjectStoreStaging",
           "StagedChunk", "Staging", "create_staging"]


def create_staging(backend: str, staging_dir: Path, min_free_bytes: int, provider: StorageProvider) -> Staging:
    """The configured backend; object-store keeps STAGING_DIR as the worker's scratch disk for finalize."""
    if backend == "object-store":
        return ObjectStoreStaging(provider, staging_dir)
    return ChunkStaging(staging_dir, min_free_bytes)

"""Chunk staging: one interface (base.Staging), the local-disk backend today (local.ChunkStaging)."""
from __future__ import annotations

from workers.staging.base import CHUNK_NAME, RECORDING_FILE, FoundChunk, StagedChunk, Staging
from workers.staging.local import ChunkStaging

__all__ = ["CHUNK_NAME", "RECORDING_FILE", "ChunkStaging", "FoundChunk", "StagedChunk", "Staging"]

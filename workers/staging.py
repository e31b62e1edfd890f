"""Chunk files on disk. Each upload is written to a temp file, fsynced, and renamed to a name of its own,
so an accepted chunk is always a complete file and a rejected upload can only delete what it wrote."""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from workers.ids import check_id, check_stream_type


@dataclass(frozen=True)
class StagedChunk:
    """One uploaded chunk on disk, not yet accepted."""

    path: Path
    digest: str
    size: int

    @property
    def name(self) -> str:
        return self.path.name


class ChunkStaging:
    """Layout: <root>/<recordingId>/<participantId>/<type>/<sequence>-<digest>-<nonce>.chunk"""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def recording_dir(self, recording_id: str) -> Path:
        return self.root / check_id(recording_id, "recordingId")

    def stream_dir(self, recording_id: str, participant_id: str, kind: str) -> Path:
        return self.recording_dir(recording_id) / check_id(participant_id, "participantId") / check_stream_type(kind)

    def output_dir(self, recording_id: str) -> Path:
        """Where finalize writes outputs before upload (kept until the recording is cleaned up)."""
        return self.recording_dir(recording_id) / "_outputs"

    def stage(self, recording_id: str, participant_id: str, kind: str, sequence: int, data: bytes) -> StagedChunk:
        directory = self.stream_dir(recording_id, participant_id, kind)
        directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()
        final = directory / f"{sequence:08d}-{digest[:16]}-{secrets.token_hex(4)}.chunk"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return StagedChunk(path=final, digest=digest, size=len(data))

    def chunk_path(self, recording_id: str, participant_id: str, kind: str, name: str) -> Path:
        return self.stream_dir(recording_id, participant_id, kind) / name

    def remove_recording(self, recording_id: str) -> None:
        shutil.rmtree(self.recording_dir(recording_id), ignore_errors=True)

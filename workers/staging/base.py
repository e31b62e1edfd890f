"""What intake, finalize, rebuild and cleanup need from chunk staging, whatever holds the chunks: one interface so
a deployment can move staging off the web node's disk (STAGING_BACKEND) without touching those callers. Chunks are
named by content, <sequence>-<sha256>.chunk, so a lost reply or a twin upload rewrites the same name."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO, Iterator, Sequence

CHUNK_NAME = re.compile(r"(\d{8})-([0-9a-f]{16,64})(?:-[0-9a-f]+)?\.chunk")
"""A staged chunk's file name: sequence, then its SHA-256 (older releases: 16 hex digits and a nonce)."""
RECORDING_FILE = "recording.json"
"""Beside the chunks: what `rebuild` needs to bring back a recording Redis forgot (room, format, metadata)."""


@dataclass(frozen=True)
class StagedChunk:
    """One uploaded chunk on disk, not yet accepted."""

    path: Path
    digest: str
    size: int

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class FoundChunk:
    """A chunk found by scanning staging (rebuild): a file, or an object key on the object-store backend."""

    participant_id: str
    stream_type: str
    sequence: int
    path: PurePath

    @property
    def name(self) -> str:
        return self.path.name


Wanted = Sequence[tuple[int, str, int]]
"""(sequence, content name, size the index recorded) of the chunks finalize wants, in sequence order."""


class Staging(ABC):
    """The staging primitives: put a chunk durably, read it back, list a recording's chunks, delete, descriptor."""

    @staticmethod
    def chunk_name(sequence: int, digest: str) -> str:
        return f"{sequence:08d}-{digest}.chunk"

    @abstractmethod
    def check_space(self) -> None:
        """Raise Unavailable (503, retried by clients) when a chunk could not be stored durably now."""

    @abstractmethod
    def stage(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, data: bytes,
              digest: str | None = None) -> StagedChunk:
        """Store the chunk durably under its content name before intake acknowledges it."""

    @abstractmethod
    def open_chunk(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> BinaryIO:
        """A binary stream of one staged chunk (read in pieces, never a recording at once)."""

    @abstractmethod
    def delete_chunk(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> None:
        """Remove one staged chunk; a missing one is not an error."""

    @abstractmethod
    def scan(self, recording_id: str) -> Iterator[FoundChunk]:
        """Every chunk staged for a recording, in participant, type and sequence order."""

    @abstractmethod
    def remember(self, recording_id: str, facts: dict) -> None:
        """Write the recording descriptor (recording.json) that rebuild reads back."""

    @abstractmethod
    def recall(self, recording_id: str) -> dict | None:
        """The recording descriptor, or None when staging holds none."""

    @abstractmethod
    def remove_recording(self, recording_id: str) -> None:
        """Delete everything staged for a recording (after its output and manifest are stored, or on purge)."""

    @abstractmethod
    def output_dir(self, recording_id: str) -> Path:
        """A directory on this process's own disk where finalize writes outputs before uploading them."""

    @abstractmethod
    def local_chunks(self, recording_id: str, participant_id: str, stream_type: str, wanted: Wanted) -> list[tuple[int, Path | None]]:
        """Each wanted chunk as a readable file on this process's disk, in sequence order; None for one staging
        cannot give back whole (gone, or another size than the index recorded). The muxer reads files by path."""

    def release(self, recording_id: str, participant_id: str) -> None:
        """Drop the local copies local_chunks made for one participant (its output is muxed); default: none made."""

    def scratch_recordings(self) -> list[str]:
        """Recordings with finalize scratch on this process's disk (see sweep.py); default: none kept apart."""
        return []

    def finished(self, recording_id: str) -> None:
        """Finalize stored the outputs and manifest: drop this process's scratch files; the staged chunks stay
        until beat's retention (an operator may still requeue). Default: nothing to drop."""

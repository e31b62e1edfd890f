"""Accepting one chunk: the API's checks in their order (docs/api.md), staging on disk, one atomic Redis commit."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, TypeVar

from workers.access import Principal
from workers.media.chunk_stream import HEADER_PROBE_BYTES
from workers.media.container import SUPPORTED_CONTAINERS, describe, sniff, starts_header
from workers.chunk_index import RateCheck
from workers.errors import (ChecksumMismatch, NotFound, ParticipantLimit, PayloadTooLarge, RateLimited, RecordingNotAccepting,
                            SequenceConflict, Unavailable, UnsupportedMedia)
from workers.staging import StagedChunk, Staging
from workers.staging.local import ChunkStaging
from workers.state import ChunkRecord, RecordingStore

T = TypeVar("T")


@dataclass(frozen=True)
class ChunkUpload:
    """A validated upload: ids and sequence already well-formed, bytes decoded."""

    recording_id: str
    participant_id: str
    stream_type: str
    sequence: int
    data: bytes
    timestamp: float | None = None
    sha256: str | None = None
    """The SHA-256 (lowercase hex) the client says the bytes have, if it sent one."""
    final: bool = False
    """The client declares this chunk its stream's last (end of stream)."""


@dataclass(frozen=True)
class ChunkReceipt:
    upload: ChunkUpload
    duplicate: bool
    paused: bool = False
    finalizing: bool = False
    """Stored during the grace window after stop: the stream may just have become complete."""

    def body(self) -> dict:
        extra = {"paused": True} if self.paused else {}
        return {
            "recordingId": self.upload.recording_id,
            "participantId": self.upload.participant_id,
            "type": self.upload.stream_type,
            "sequence": self.upload.sequence,
            "bytes": len(self.upload.data),
            "duplicate": self.duplicate,
            **extra,
        }


def run_inline(work: Callable[..., T], *args: object) -> T:
    return work(*args)


run_disk_work: Callable[..., object] = run_inline
"""How intake runs a local chunk's disk work (free-space check, write, fsync, rename). The gevent web worker
replaces it (gunicorn.conf.py) with its thread pool: creating and renaming files wait on the filesystem's
journal while other uploads fsync, and on the event loop each wait stalled every request of the worker."""

KNOWN_ROOMS = 10_000
"""Recordings whose room one process remembers. A recording's room never changes, so a participant's second and
later chunks skip the room lookup (one Redis round trip of three per chunk); a recording gone since is still
refused by the accept script, which checks that it exists."""


class ChunkIntake:
    """Stages a chunk file first, then commits its record. A staged file is deleted only when the index
    certainly does not name it; when the commit's outcome is unknown (a lost Redis reply) it stays."""

    def __init__(self, store: RecordingStore, staging: Staging, max_chunk_bytes: int, max_participants: int = 0) -> None:
        self.store = store
        self.staging = staging
        self.max_chunk_bytes = max_chunk_bytes
        self.max_participants = max_participants
        self._rooms: OrderedDict[str, str] = OrderedDict()

    def check_size(self, size: int) -> None:
        if size > self.max_chunk_bytes:
            raise PayloadTooLarge(f"chunk is {size} bytes; the limit is {self.max_chunk_bytes}", limit=self.max_chunk_bytes)

    def accept(self, upload: ChunkUpload, principal: Principal, rate: RateCheck | None = None) -> ChunkReceipt:
        """`rate`: the caller's CHUNK_RATE_LIMIT windows, counted by the commit itself (429 before any other of its
        checks; the staged file is then discarded)."""
        self.check_size(len(upload.data))
        digest = verified_digest(upload)
        principal.require_uploader(self._room_of(upload.recording_id), upload.participant_id)
        container_problem = self._container_problem(upload)
        staged = self._stage(upload, digest)
        record = ChunkRecord(digest=staged.digest, size=staged.size, timestamp=upload.timestamp, name=staged.name)
        try:
            outcome, state = self.store.accept_chunk(
                upload.recording_id, upload.participant_id, upload.stream_type, upload.sequence, record,
                container_ok=container_problem is None, header=starts_header(upload.data[:HEADER_PROBE_BYTES]),
                max_participants=self.max_participants, final=upload.final, rate=rate,
            )
        except BaseException:
            self._settle_unknown(upload, staged)
            raise
        if outcome == "not_found":  # known a moment ago: purged, or lost with Redis (then `rebuild` needs this file)
            self._rooms.pop(upload.recording_id, None)
        elif outcome == "rate_limited":
            if not rate.held:  # refused before the sequence check: the file may be an acknowledged retry's
                self._discard(upload, staged)
            raise RateLimited(f"too many uploads: the limit is {rate.text} per participant; retry later",
                              retry_after=-(-max(rate.retry_after_ms or 0, 1) // 1000))
        elif outcome not in ("stored", "duplicate"):
            self._discard(upload, staged)  # a rejection: the index names no file of these bytes
        return self._receipt(upload, outcome, state, container_problem)

    def _room_of(self, recording_id: str) -> str:
        """The recording's room, remembered once seen (404 when Redis does not know the recording)."""
        room = self._rooms.get(recording_id)
        if room is None:
            room = self.store.room_of(recording_id)
            if room is None:
                raise NotFound("no such recording", recordingId=recording_id)
            self._rooms[recording_id] = room
            if len(self._rooms) > KNOWN_ROOMS:
                self._rooms.popitem(last=False)
        return room

    def _stage(self, upload: ChunkUpload, digest: str | None) -> StagedChunk:
        if isinstance(self.staging, ChunkStaging):  # local disk: off the event loop (an object store's I/O is a socket's)
            return run_disk_work(self._stage_now, upload, digest)  # type: ignore[return-value]
        return self._stage_now(upload, digest)

    def _stage_now(self, upload: ChunkUpload, digest: str | None) -> StagedChunk:
        self.staging.check_space()
        try:
            return self.staging.stage(upload.recording_id, upload.participant_id, upload.stream_type, upload.sequence,
                                      upload.data, digest)
        except OSError as exc:  # disk full or unmounted: the client should retry, not drop the chunk
            raise Unavailable(f"chunk staging failed ({exc.strerror or type(exc).__name__}); retry later") from None

    def _settle_unknown(self, upload: ChunkUpload, staged: StagedChunk) -> None:
        """The commit may have happened: keep the file unless one more read proves the index does not name it."""
        try:
            held = self.store.chunk_record(upload.recording_id, upload.participant_id, upload.stream_type, upload.sequence)
        except Exception:  # noqa: BLE001 - still unknown: keeping an orphan is cheap, losing a chunk is not
            return
        if held is None or held.digest != staged.digest:
            self._discard(upload, staged)

    def _discard(self, upload: ChunkUpload, staged: StagedChunk) -> None:
        self.staging.delete_chunk(upload.recording_id, upload.participant_id, upload.stream_type, staged.name)

    @staticmethod
    def _receipt(upload: ChunkUpload, outcome: str, state: str | None, container_problem: str | None) -> ChunkReceipt:
        if outcome in ("stored", "duplicate"):
            return ChunkReceipt(upload=upload, duplicate=outcome == "duplicate", paused=state == "paused",
                                finalizing=state == "finalizing")
        if outcome == "not_found":
            raise NotFound("no such recording", recordingId=upload.recording_id)
        if outcome == "not_recording":
            raise RecordingNotAccepting(f"the recording is {state} and no longer accepts chunks",
                                        recordingId=upload.recording_id, state=state)
        if outcome == "conflict":
            raise SequenceConflict(
                f"sequence {upload.sequence} was already received with different bytes",
                recordingId=upload.recording_id, sequence=upload.sequence,
            )
        if outcome == "after_final":
            raise SequenceConflict(
                f"sequence {upload.sequence} does not fit the stream's final chunk (none may follow it)",
                recordingId=upload.recording_id, sequence=upload.sequence,
            )
        if outcome == "participant_limit":
            raise ParticipantLimit("the recording has as many participants as it allows",
                                   recordingId=upload.recording_id)
        raise UnsupportedMedia(container_problem or "unsupported media")

    @staticmethod
    def _container_problem(upload: ChunkUpload) -> str | None:
        """Sequence 0 must be a container header tapedeck can read; later chunks are mid-stream bytes."""
        if upload.sequence != 0:
            return None
        container = sniff(upload.data)
        return None if container in SUPPORTED_CONTAINERS else describe(container, upload.data)


def verified_digest(upload: ChunkUpload) -> str | None:
    """The chunk's SHA-256 when the client sent one and it matches (staging reuses it: one hash per chunk)."""
    if upload.sha256 is None:
        return None
    digest = hashlib.sha256(upload.data).hexdigest()
    if digest != upload.sha256:
        raise ChecksumMismatch("the chunk's bytes do not match its sha256; nothing was stored",
                               expected=upload.sha256, received=digest)
    return digest

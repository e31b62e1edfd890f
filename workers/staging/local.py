"""Chunk files on disk, named by content: <sequence>-<sha256>.chunk. Each upload is written to a temp file of its
own, fsynced and renamed onto that name, so an accepted chunk is always a complete file, a retry of the same
bytes rewrites the same file, and no request ever deletes a file the index may name (the index names a file by
sequence and digest, and only different bytes have a different name)."""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from workers.errors import Unavailable
from workers.ids import check_id, check_stream_type
from workers.staging.base import CHUNK_NAME, RECORDING_FILE, FoundChunk, StagedChunk, Staging, Wanted

log = logging.getLogger(__name__)

__all__ = ["CHUNK_NAME", "RECORDING_FILE", "ChunkStaging", "FoundChunk", "StagedChunk"]


class ChunkStaging(Staging):
    """Layout: <root>/<recordingId>/<participantId>/<type>/<sequence>-<sha256>.chunk"""

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self._stream_dirs: dict[tuple[str, str, str], str] = {}

    def recording_dir(self, recording_id: str) -> Path:
        return self.root / check_id(recording_id, "recordingId")

    def stream_dir(self, recording_id: str, participant_id: str, stream_type: str) -> Path:
        return self.recording_dir(recording_id) / check_id(participant_id, "participantId") / check_stream_type(stream_type)

    def output_dir(self, recording_id: str) -> Path:
        """Where finalize writes outputs before upload (kept until the recording is cleaned up)."""
        return self.recording_dir(recording_id) / "_outputs"

    def free_bytes(self) -> int:
        """Free space where chunks land (the nearest existing ancestor of the root, before the first chunk)."""
        try:
            return shutil.disk_usage(self.root).free  # the root exists once a chunk landed: one statvfs per chunk
        except FileNotFoundError:
            pass
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free

    def check_space(self) -> None:
        """Below the floor, refuse new chunks with 503 (the client retries) instead of half-writing them."""
        if self.min_free_bytes <= 0:
            return
        try:
            free = self.free_bytes()
        except OSError as exc:
            raise Unavailable(f"chunk staging is unavailable ({exc.strerror or type(exc).__name__}); retry later") from None
        if free < self.min_free_bytes:
            raise Unavailable("chunk staging is low on disk space; retry later", reason="staging_full")

    def stage(self, recording_id: str, participant_id: str, stream_type: str, sequence: int, data: bytes,
              digest: str | None = None) -> StagedChunk:
        """Write the chunk under its content name; `digest` is its SHA-256 when intake already verified it.
        Per chunk only what durability needs: create the temp file, write, fsync, rename. The stream's directory
        is made only when the create finds it missing (a mkdir per chunk was a failing syscall, an exception and
        a stat), and the file is written through os calls (io.open added an fstat and a buffer it never used)."""
        directory = self._stream_dir_text(recording_id, participant_id, stream_type)
        digest = digest or hashlib.sha256(data).hexdigest()
        name = self.chunk_name(sequence, digest)
        final = f"{directory}/{name}"
        tmp = f"{directory}/.{name}.{_temp_tag()}.tmp"
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o644)
        except FileNotFoundError:  # the stream's first chunk (or its directory was removed): make it, once
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, _CREATE_FLAGS, 0o644)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                close_file(fd)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return StagedChunk(path=Path(final), digest=digest, size=len(data))

    def _stream_dir_text(self, recording_id: str, participant_id: str, stream_type: str) -> str:
        """stream_dir as text, remembered per stream (bounded): the chunk path's three pathlib joins were a tenth of
        intake's own Python work. Ids are checked (stream_dir) before a stream's directory is first remembered."""
        stream = (recording_id, participant_id, stream_type)
        directory = self._stream_dirs.get(stream)
        if directory is None:
            directory = str(self.stream_dir(recording_id, participant_id, stream_type))
            if len(self._stream_dirs) >= KNOWN_STREAMS:
                self._stream_dirs.clear()
            self._stream_dirs[stream] = directory
        return directory

    def chunk_path(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> Path:
        return self.stream_dir(recording_id, participant_id, stream_type) / name

    def open_chunk(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> BinaryIO:
        return open(self.chunk_path(recording_id, participant_id, stream_type, name), "rb")

    def delete_chunk(self, recording_id: str, participant_id: str, stream_type: str, name: str) -> None:
        self.chunk_path(recording_id, participant_id, stream_type, name).unlink(missing_ok=True)

    def local_chunks(self, recording_id: str, participant_id: str, stream_type: str, wanted: Wanted) -> list[tuple[int, Path | None]]:
        """The staged files themselves, each only if it has the size the index recorded (fsynced before it)."""
        out: list[tuple[int, Path | None]] = []
        for sequence, name, size in wanted:
            path = self.chunk_path(recording_id, participant_id, stream_type, name)
            out.append((sequence, path if _size(path) == size else None))
        return out

    def remember(self, recording_id: str, facts: dict) -> None:
        """Write the recording's sidecar (at start) for a rebuild to read back. Best effort: staging that cannot
        take it will refuse the chunks too, with 503, which the clients retry."""
        path = self.recording_dir(recording_id) / RECORDING_FILE
        tmp = path.with_name(f".{RECORDING_FILE}.{secrets.token_hex(4)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(facts))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc.strerror or type(exc).__name__)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def recall(self, recording_id: str) -> dict | None:
        path = self.recording_dir(recording_id) / RECORDING_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def scan(self, recording_id: str) -> Iterator[FoundChunk]:
        """Every chunk file staged for a recording, in participant, type and sequence order."""
        root = self.recording_dir(recording_id)
        for path in sorted(root.glob("*/*/*.chunk")):
            match = CHUNK_NAME.fullmatch(path.name)
            participant_id, stream_type = path.parent.parent.name, path.parent.name
            if match and stream_type in ("video", "audio") and not participant_id.startswith("_"):
                yield FoundChunk(participant_id, stream_type, int(match.group(1)), path)

    def remove_recording(self, recording_id: str) -> None:
        shutil.rmtree(self.recording_dir(recording_id), ignore_errors=True)


KNOWN_STREAMS = 10_000
"""Stream directories one process remembers (forgotten all at once past this: rebuilt on the next chunk)."""
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
"""O_EXCL: the temp name is unique to this write, so an existing file there is never ours to overwrite."""

close_file: Callable[[int], None] = os.close
"""How a staged file's descriptor is closed. Under gevent, os.close first checks the descriptor (fcntl, fstat) in
case an event-loop watcher polls it, and closes a regular file directly; gunicorn.conf.py puts the unpatched close
here for the gevent web worker, since a staged chunk is always a regular file (two syscalls less per chunk)."""

_process_tag = secrets.token_hex(4)
_serials = itertools.count()


def _temp_tag() -> str:
    """Unique among every writer of a staging directory: a random tag drawn once per process (again after a fork)
    and a counter, not a random draw (a getrandom call) per chunk. Should two processes ever draw the same tag, the
    exclusive create fails and the client's retry gets another name."""
    return f"{_process_tag}-{next(_serials)}"


def _new_process_tag() -> None:
    global _process_tag, _serials
    _process_tag, _serials = secrets.token_hex(4), itertools.count()


os.register_at_fork(after_in_child=_new_process_tag)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a signal, a full pipe): loop until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None

"""A stream's chunk files read in order as one seekable byte stream, so the demuxer never needs the
whole recording in memory, and split at each recorder restart (a new header) into segments."""
from __future__ import annotations

import bisect
import io
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.media.container import Container, sniff

HEADER_PROBE_BYTES = 16
"""Enough of a chunk's first bytes to recognize a container header (EBML magic, or an ftyp box header)."""

Chunk = tuple[int, Path]
"""(sequence, path) of one chunk file present on disk."""


class ChunkStream(io.RawIOBase):
    """Read-only view of several files as their concatenation; only one file is open at a time."""

    def __init__(self, paths: Sequence[Path], sequences: Sequence[int] | None = None) -> None:
        super().__init__()
        self._paths = [Path(path) for path in paths]
        self._starts: list[int] = []
        total = 0
        for path in self._paths:
            self._starts.append(total)
            total += os.stat(path).st_size
        self._size = total
        numbers = list(sequences) if sequences is not None else list(range(len(self._paths)))
        gaps = [0] + [max(0, b - a - 1) for a, b in zip(numbers, numbers[1:])]
        self._missing_before = list(itertools.accumulate(gaps))
        """Missing sequences before each file, counted from the first: where the holes are."""
        self._pos = 0
        self._index = -1
        self._handle: BinaryIO | None = None

    @property
    def size(self) -> int:
        """Total bytes of every file, known up front so progress can be a fraction."""
        return self._size

    @property
    def breaks(self) -> list[int]:
        """Byte offsets where a hole lies just before: data running across one does not belong together."""
        steps = zip(self._starts, self._missing_before, [0, *self._missing_before])
        return [start for start, missing, previous in steps if missing > previous]

    def lost_bytes(self, start: int, end: int) -> tuple[float, float]:
        """Bytes the recording held between two positions, each missing chunk counted as an average present
        one: (all of them, the missing chunks' share)."""
        missing = self._missing_at(end) - self._missing_at(start)
        estimate = missing * self._size / max(1, len(self._paths))
        return end - start + estimate, estimate

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence: {whence}")
        target = base + offset
        if target < 0:
            raise OSError(f"negative seek position {target}")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        """Bytes straight from the current file (one copy, not RawIOBase's two); short at file ends."""
        if size is None or size < 0:
            return self.readall()
        self._check_open()
        if size == 0 or self._pos >= self._size:
            return b""
        data = self._handle_at(self._pos).read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill `buffer` from as many consecutive files as it takes; 0 only at the end."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._pos < self._size:
            handle = self._handle_at(self._pos)
            got = handle.readinto(view[filled:])
            if not got:  # a file shrank under us: treat its missing tail as the end
                break
            filled += got
            self._pos += got
        return filled

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        super().close()

    def _handle_at(self, pos: int) -> BinaryIO:
        """Open (or reuse) the file holding byte `pos` and position it there."""
        index = bisect.bisect_right(self._starts, pos) - 1  # rightmost: skips empty files at pos
        if index != self._index:
            if self._handle is not None:
                self._handle.close()
            self._handle = open(self._paths[index], "rb")
            self._index = index
        offset = pos - self._starts[index]
        if self._handle.tell() != offset:
            self._handle.seek(offset)
        return self._handle

    def _missing_at(self, pos: int) -> int:
        return self._missing_before[max(0, bisect.bisect_right(self._starts, pos) - 1)] if self._paths else 0

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed ChunkStream")


@dataclass(frozen=True)
class SegmentPlan:
    """A stream's chunks grouped by recorder: each segment starts with its own container header."""

    segments: list[list[Chunk]]
    containers: list[Container]
    """The container each segment's header chunk starts (sniffed once here, so the demuxer need not read it again)."""
    dropped: list[int]
    """Sequences before the first header chunk: without a header they cannot be demuxed."""


def container_at(path: Path) -> Container:
    """The container a chunk file begins (EBML magic or an MP4 init segment), UNKNOWN when it continues one."""
    with open(path, "rb") as handle:
        return sniff(handle.read(HEADER_PROBE_BYTES))


def starts_run(path: Path) -> bool:
    """True when a chunk file begins a container (a recorder's first chunk): where split_segments splits."""
    return container_at(path) is not Container.UNKNOWN


def split_segments(chunks: Sequence[Chunk]) -> SegmentPlan:
    """Split a sequence-sorted chunk list at every header chunk (a client restarted its recorder); each chunk's
    first bytes are read once."""
    segments: list[list[Chunk]] = []
    containers: list[Container] = []
    dropped: list[int] = []
    for sequence, path in chunks:
        container = container_at(path)
        if container is not Container.UNKNOWN:
            segments.append([(sequence, path)])
            containers.append(container)
        elif segments:
            segments[-1].append((sequence, path))
        else:
            dropped.append(sequence)
    return SegmentPlan(segments=segments, containers=containers, dropped=dropped)

"""Per-part SHA-256 of a live output, computed while the room records, so stop does not read the whole file.

A whole-file SHA-256 cannot be computed ahead: the header at the file's start is written at stop. So the file is
cut into parts of a fixed size; each part is hashed once it is complete and will not change again (not the
header's reserved space, not the tail where the Cues go). At stop only the parts touched by the header and the
tail are hashed. The composite is the SHA-256 of the parts' binary digests joined in order, as S3's composite
checksums are built. A reader checks a file by recomputing it from the bytes (see `parts_checksum`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage_providers.base import count_parts, part_span

PART_SIZE = 8 * 1024 * 1024
"""Bytes per part: a part is about 10 s of 720p, so at stop at most a header part and two tail parts are hashed."""

ALGORITHM = "sha256-parts"
METADATA_KEY = "sha256-parts"
"""Object metadata `<partSize>:<composite hex>`: the local provider checks what it stores against it."""


@dataclass(frozen=True)
class PartChecksum:
    part_size: int
    digests: list[bytes]
    head: int = 0
    """Bytes the first part holds beyond part_size: a live MP4's header, written in front of media whose parts
    were cut while recording (workers/live/mp4_output.py). 0: every part but the last is part_size."""

    @property
    def composite(self) -> str:
        return hashlib.sha256(b"".join(self.digests)).hexdigest()

    def to_json(self) -> dict:
        """The manifest's `checksum` of an output."""
        shape = {"algorithm": ALGORITHM, "partSize": self.part_size, "parts": len(self.digests),
                 "composite": self.composite}
        return shape | ({"firstPartSize": self.part_size + self.head} if self.head else {})

    def metadata(self) -> str:
        """`<partSize>:<composite>`, or `<partSize>+<head>:<composite>` when the first part is longer."""
        return f"{self.part_size}{f'+{self.head}' if self.head else ''}:{self.composite}"


def hash_part(handle, index: int, part_size: int) -> bytes:
    """The binary SHA-256 of part `index` of an open file (shorter at the file's end)."""
    return hash_range(handle, index * part_size, part_size)


def hash_range(handle, offset: int, length: int, prefix: bytes = b"") -> bytes:
    """The binary SHA-256 of `prefix` and then `length` bytes from `offset` of an open file (fewer at its end)."""
    handle.seek(offset)
    digest = hashlib.sha256(prefix)
    left = length
    while left > 0:
        block = handle.read(min(1024 * 1024, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.digest()


def stored_digests(parts: Path, length: int, part_size: int) -> list[bytes]:
    """The digests a sidecar (`parts`, 32 bytes each) holds of the parts complete before `length` (a step that
    crashed before its state was saved may have hashed more)."""
    try:
        raw = parts.read_bytes()
    except FileNotFoundError:
        return []
    return [raw[i * 32:(i + 1) * 32] for i in range(min(len(raw) // 32, length // part_size))]


def hash_new_parts(parts: Path, source: BinaryIO, before: int, after: int, part_size: int, first: int) -> None:
    """Append to the sidecar the digests of the parts of `source` complete between `before` (the saved length:
    what lay past it is hashed again) and `after`; parts before `first` (rewritten at stop) get zeros."""
    done = stored_digests(parts, before, part_size)
    with open(parts, "r+b" if parts.exists() else "w+b") as out:
        out.truncate(len(done) * 32)
        out.seek(len(done) * 32)
        for index in range(len(done), after // part_size):
            out.write(hash_part(source, index, part_size) if index >= first else bytes(32))


def parts_checksum(path: Path, part_size: int = PART_SIZE, head: int = 0) -> PartChecksum:
    """Every part hashed from the bytes: what a reader recomputes to check a downloaded file."""
    size = path.stat().st_size
    digests = []
    with open(path, "rb") as handle:
        for number in range(1, count_parts(size, part_size, head) + 1):
            offset, length = part_span(number, size, part_size, head)
            digests.append(hash_range(handle, offset, length))
    return PartChecksum(part_size, digests, head)


def part_count(size: int, part_size: int) -> int:
    """Parts of a file of `size` bytes; an empty file has one (empty) part."""
    return max(1, -(-size // part_size))

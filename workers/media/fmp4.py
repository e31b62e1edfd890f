"""Fragmented MP4 read across holes. The mov demuxer cannot resync after missing or corrupt bytes the way the
Matroska one does, so this walks the boxes first and shows it only the init segment and the whole moof+mdat
fragments: a hole or corrupt data then costs the fragments it cut, and reading resumes at the next moof."""
from __future__ import annotations

import bisect
import io
import logging
from dataclasses import dataclass, field

from workers.media.chunk_stream import ChunkStream
from workers.media.errors import MediaError

log = logging.getLogger(__name__)

MOOF_CHILDREN = frozenset({b"mfhd", b"traf", b"pssh", b"meta", b"free", b"skip", b"uuid"})
TRAF_CHILDREN = frozenset({b"tfhd", b"tfdt", b"trun", b"sbgp", b"sgpd", b"subs", b"saiz", b"saio", b"senc",
                           b"meta", b"free", b"skip", b"uuid"})
"""Boxes a movie fragment may hold: a moof whose children do not tile it with these is corrupt, not a fragment."""

SKIPPABLE = frozenset({b"styp", b"sidx", b"ssix", b"prft", b"emsg", b"free", b"skip", b"mfra", b"udta", b"uuid"})
"""Top-level boxes between fragments that the demuxer does not need (mfra's offsets would even be wrong)."""

MAX_MOOF_BYTES = 4 * 1024 * 1024
"""Far above a real moof (16 bytes per sample at most), so a corrupt size is not read as one."""

SCAN_BYTES = 256 * 1024
"""How much is read at a time while searching for the next moof after a hole or corrupt data."""


@dataclass(frozen=True)
class Piece:
    """A run of kept source bytes and where it lands in the view the demuxer reads."""

    start: int
    source: int
    length: int


@dataclass
class FragmentPlan:
    """What of an fMP4 segment is readable: the init segment, then whole fragments, in order."""

    pieces: list[Piece] = field(default_factory=list)
    fragments: int = 0
    cuts: int = 0
    """Places where a hole or corrupt data cut a fragment and the walk skipped to the next moof."""
    dropped_bytes: int = 0

    def keep(self, source: int, length: int) -> None:
        start = self.pieces[-1].start + self.pieces[-1].length if self.pieces else 0
        if self.pieces and self.pieces[-1].source + self.pieces[-1].length == source:
            last = self.pieces[-1]
            self.pieces[-1] = Piece(last.start, last.source, last.length + length)
        else:
            self.pieces.append(Piece(start, source, length))


class FragmentWalker:
    """Walks the top-level boxes of one segment's chunk stream, checking each against the holes between chunks."""

    def __init__(self, stream: ChunkStream) -> None:
        self.stream = stream
        self.size = stream.size
        self.breaks = stream.breaks

    def plan(self) -> FragmentPlan:
        """The init segment plus every fragment that is whole and well formed."""
        plan = FragmentPlan()
        pos = self._init_end()
        plan.keep(0, pos)
        while pos < self.size:
            fragment = self._fragment_at(pos)
            if fragment:
                plan.keep(pos, fragment)
                plan.fragments += 1
                pos += fragment
                continue
            box = self._box(pos)
            if box is not None and box[1] in SKIPPABLE and not self._cut(pos, pos + box[0]):
                pos += box[0]
                continue
            resume = self._next_moof(pos + 1)
            plan.cuts += 1
            plan.dropped_bytes += resume - pos
            pos = resume
        if plan.cuts:
            log.warning("fMP4: left out %d bytes at %d places cut by holes or corrupt data", plan.dropped_bytes, plan.cuts)
        return plan

    def _init_end(self) -> int:
        """Where the init segment (ftyp, moov and anything else before the first moof) ends."""
        pos, seen = 0, set()
        while pos < self.size:
            box = self._box(pos)
            if box is None or box[1] == b"moof":
                break
            seen.add(box[1])
            pos += box[0]
        if b"moov" not in seen or self._cut(0, pos):
            raise MediaError("the MP4 init segment (ftyp, moov) is incomplete: the header chunk is cut or corrupt")
        return pos

    def _fragment_at(self, pos: int) -> int:
        """Bytes of the moof+mdat pair at `pos` when it is whole, well formed and not cut by a hole; else 0."""
        moof = self._box(pos)
        if moof is None or moof[1] != b"moof" or not 16 <= moof[0] <= MAX_MOOF_BYTES:
            return 0
        mdat = self._box(pos + moof[0])
        if mdat is None or mdat[1] != b"mdat":
            return 0
        length = moof[0] + mdat[0]
        if pos + length > self.size or self._cut(pos, pos + length) or not self._moof_ok(pos, moof[0]):
            return 0
        return length

    def _moof_ok(self, pos: int, size: int) -> bool:
        """A moof whose children tile it with fragment boxes (each traf's children too): random bytes never do."""
        body = self._read(pos, size)
        return _tiles(body, 8, size, MOOF_CHILDREN, nested={b"traf": TRAF_CHILDREN})

    def _next_moof(self, start: int) -> int:
        """The position of the next plausible fragment at or after `start`, or the end of the stream."""
        pos = start
        while pos < self.size:
            window = self._read(pos, min(SCAN_BYTES + 8, self.size - pos))
            found = window.find(b"moof", 4)
            while found != -1:
                if self._fragment_at(pos + found - 4):
                    return pos + found - 4
                found = window.find(b"moof", found + 1)
            if len(window) <= 8:
                break
            pos += len(window) - 8  # overlap, so a box header across windows is still found
        return self.size

    def _box(self, pos: int) -> tuple[int, bytes] | None:
        """(size, type) of the box at `pos`; None when no sane header fits there."""
        if pos + 8 > self.size:
            return None
        header = self._read(pos, 16 if pos + 16 <= self.size else 8)
        size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
        if size == 1 and len(header) == 16:
            size = int.from_bytes(header[8:16], "big")
        elif size == 0:
            size = self.size - pos  # "to the end of the file"
        if size < 8 or pos + size > self.size or not box_type.isascii() or not box_type.strip(b" ").isalnum():
            return None
        return size, box_type

    def _read(self, pos: int, size: int) -> bytes:
        """Exactly `size` bytes from `pos` (fewer only at the end), across chunk files."""
        buffer = bytearray(size)
        self.stream.seek(pos)
        return bytes(buffer[:self.stream.readinto(buffer)])

    def _cut(self, start: int, end: int) -> bool:
        """True when a hole lies strictly inside [start, end): the bytes on either side do not belong together."""
        index = bisect.bisect_right(self.breaks, start)
        return index < len(self.breaks) and self.breaks[index] < end


def _tiles(data: bytes, start: int, end: int, allowed: frozenset[bytes], nested: dict[bytes, frozenset[bytes]]) -> bool:
    """True when boxes of allowed types exactly fill data[start:end] (recursing into the nested containers)."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            return False
        size, box_type = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if box_type not in allowed or size < 8 or pos + size > end:
            return False
        if box_type in nested and not _tiles(data, pos + 8, pos + size, nested[box_type], {}):
            return False
        pos += size
    return pos == end


class FragmentView(io.RawIOBase):
    """The kept pieces of a chunk stream read as one seekable file: what the mov demuxer is given."""

    def __init__(self, stream: ChunkStream, plan: FragmentPlan) -> None:
        super().__init__()
        self.plan = plan
        self._stream, self._pieces = stream, plan.pieces
        self._starts = [piece.start for piece in plan.pieces]
        self._size = sum(piece.length for piece in plan.pieces)
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view, filled = memoryview(buffer).cast("B"), 0
        while filled < len(view) and self._pos < self._size:
            piece = self._pieces[bisect.bisect_right(self._starts, self._pos) - 1]
            within = self._pos - piece.start
            want = min(len(view) - filled, piece.length - within)
            self._stream.seek(piece.source + within)
            got = self._stream.readinto(view[filled:filled + want])
            if not got:
                break
            filled += got
            self._pos += got
        return filled

    def lost_bytes(self, start: int, end: int) -> tuple[float, float]:
        """Recorded bytes between two view positions, counting the fragments left out between them."""
        return self._stream.lost_bytes(self._source(start), self._source(end))

    def close(self) -> None:
        self._stream.close()
        super().close()

    def _source(self, pos: int) -> int:
        piece = self._pieces[max(0, bisect.bisect_right(self._starts, pos) - 1)]
        return piece.source + min(pos - piece.start, piece.length)

"""A participant's output file grown window by window: each window file's Clusters are appended as they are,
its Cues rewritten to the Clusters' new places, and at stop the Cues, then the header (EBML header, Segment
size, SeekHead, Info with Duration, Tracks) written into space reserved at the start — so stop costs the same
for ten minutes as for two hours.

Everything but the media lives in sidecar files next to the output (Tracks, Info, Cue points), so the Redis
state stays a few hundred bytes. When a stream joined after the first window, a window numbers its tracks in
batch order, which may differ from the output's numbers (each track keeps the one it first got): its blocks and
cue points are renumbered as they are copied (one byte per block), and the Tracks kept are the window's, in batch
order, with the output's numbers. A crash between an append and the state's update is undone by truncating
to the length the state records.
"""
from __future__ import annotations

import bisect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.live.checksum import PART_SIZE, PartChecksum, hash_new_parts, hash_part, part_count, stored_digests
from workers.live.source import Unsupported
from workers.media import ebml_io as ebml

RESERVED_BYTES = 64 * 1024
"""Room at the start for the header written at stop; a header that does not fit leaves it to batch."""

DOC_TYPES = {"webm": "webm", "matroska": "matroska"}


@dataclass(frozen=True)
class Appended:
    bytes: int
    """The output's length after the window."""
    cue_bytes: int
    end_seconds: float
    """The window's Duration: where its last packet ends on the output timeline."""


@dataclass(frozen=True)
class _Window:
    segment_start: int
    info: ebml.Element
    tracks: ebml.Element
    clusters: list[ebml.Element]
    cue_points: list[ebml.Element]


class LiveFile:
    """The output and its sidecars under one directory, named after the participant."""

    def __init__(self, directory: Path, participant_id: str, extension: str, part_size: int = PART_SIZE) -> None:
        self.path = directory / f"{participant_id}.live.{extension}"
        self.parts = directory / f"{participant_id}.live.parts"
        """The SHA-256 of each part complete so far, 32 bytes each (zeros for the header's parts, hashed at stop)."""
        self.part_size = part_size
        self.cues = directory / f"{participant_id}.live.cues"
        self.info = directory / f"{participant_id}.live.info"
        self.tracks = directory / f"{participant_id}.live.tracks"
        self.poster = directory / f"{participant_id}.live.jpg"
        """The poster taken while recording (workers/live/step.py), reused at stop."""

    def append(self, window: Path, fmt: str, length: int, cue_length: int,
               numbers: list[int] | None = None, keep_tracks: bool = False) -> Appended:
        """Append a remuxed window's Clusters at `length` and its cue points at `cue_length`; `numbers` gives the
        output's track number of each of the window's tracks (None: the same numbers). `keep_tracks`: a stream
        joined, and this window's Tracks replace the first window's (which a restarted recorder's never do: batch
        keeps the first run's too)."""
        renumber = {n: m for n, m in enumerate(numbers or [], 1) if n != m}
        segment_start = len(ebml.ebml_header(DOC_TYPES[fmt])) + 4 + ebml.SIZE_WIDTH
        if length and (_size(self.path) < length or _size(self.cues) < cue_length):
            raise Unsupported("the live files are shorter than the state says")  # never pad a gap with zeros
        before = length
        with open(window, "rb") as source:
            parsed = _parse(source)
            if length == 0:
                self._begin(source, parsed)
                length = RESERVED_BYTES
            elif keep_tracks:
                self._keep_tracks(source, parsed, renumber)
            moved: dict[int, int] = {}
            with open(self.path, "r+b") as out:
                out.truncate(length)
                out.seek(length)
                for cluster in parsed.clusters:
                    moved[cluster.start - parsed.segment_start] = out.tell() - segment_start
                    if renumber:
                        out.write(_renumbered_cluster(source, cluster, renumber))
                    else:
                        _copy(source, cluster.start, cluster.end, out)
                length = out.tell()
                self._hash_parts(out, before, length)
            points = b"".join(_moved_cue_point(source, point, moved, renumber) for point in parsed.cue_points)
            info = dict(_values(source, parsed.info))
        with open(self.cues, "r+b" if self.cues.exists() else "w+b") as cues:
            cues.truncate(cue_length)
            cues.seek(cue_length)
            cues.write(points)
            cue_length = cues.tell()
        scale = ebml.read_uint(info.get(ebml.TIMESTAMP_SCALE, b"")) or 1_000_000
        end = ebml.read_float(info.get(ebml.DURATION, b"")) * scale / 1e9
        return Appended(bytes=length, cue_bytes=cue_length, end_seconds=end)

    def finish(self, fmt: str, length: int, cue_length: int, duration_seconds: float) -> Path:
        """Write the Cues after the last Cluster and the header into the reserved space; the file is then a
        complete, seekable Matroska/WebM file."""
        head, cues = self._closing(fmt, length, cue_length, duration_seconds)
        with open(self.path, "r+b") as out:
            out.truncate(length)
            out.seek(length)
            out.write(cues)
            out.seek(0)
            out.write(head)
        return self.path

    def snapshot(self, fmt: str, length: int, cue_length: int, duration_seconds: float) -> BinaryIO:
        """The file as `finish` would leave it if the recording stopped now, read without writing it: the header
        and Cues made in memory around the Clusters on disk. The live poster is taken from it while recording
        (workers/live/step.py), from the same bytes the closed file will hold."""
        head, cues = self._closing(fmt, length, cue_length, duration_seconds)
        return io.BufferedReader(_Joined([head, (self.path, RESERVED_BYTES, length), cues]))

    def _closing(self, fmt: str, length: int, cue_length: int, duration_seconds: float) -> tuple[bytes, bytes]:
        """The header (padded to RESERVED_BYTES) and the Cues element that close the file at `length`."""
        header = ebml.ebml_header(DOC_TYPES[fmt])
        segment_start = len(header) + 4 + ebml.SIZE_WIDTH
        with open(self.cues, "rb") as handle:
            points = handle.read(cue_length)  # what a crashed step appended past it is not ours
        cues = ebml.element(ebml.CUES, points)
        scale_info = self.info.read_bytes()
        info = ebml.element(ebml.INFO, scale_info + ebml.float_element(ebml.DURATION, duration_seconds * 1000))
        tracks = self.tracks.read_bytes()
        total = length + len(cues)
        seek_head_length = len(_seek_head({ebml.INFO: 0, ebml.TRACKS: 0, ebml.CUES: 0}))
        info_at = seek_head_length
        tracks_at = info_at + len(info)
        head = header + ebml.encode_id(ebml.SEGMENT) + ebml.encode_size(total - segment_start, ebml.SIZE_WIDTH)
        head += _seek_head({ebml.INFO: info_at, ebml.TRACKS: tracks_at, ebml.CUES: length - segment_start})
        head += info + tracks
        if len(head) + 1 + ebml.SIZE_WIDTH > RESERVED_BYTES:
            raise Unsupported("the header does not fit the reserved space")
        return head + ebml.void(RESERVED_BYTES - len(head)), cues

    def checksum(self, length: int) -> PartChecksum:
        """The closed file's part checksums: the parts hashed while recording (wholly before `length`, the end of
        the last Cluster, so the Cues did not touch them), the header's and the tail's hashed now."""
        ahead = stored_digests(self.parts, length, self.part_size)
        first = self._first_ahead()
        with open(self.path, "rb") as handle:
            total = self.path.stat().st_size
            digests = [ahead[k] if first <= k < len(ahead) else hash_part(handle, k, self.part_size)
                       for k in range(part_count(total, self.part_size))]
        return PartChecksum(self.part_size, digests)

    def _first_ahead(self) -> int:
        """The first part past the reserved header space: parts before it are rewritten at stop."""
        return -(-RESERVED_BYTES // self.part_size)

    def _hash_parts(self, out: BinaryIO, before: int, length: int) -> None:
        """Hash the parts this append completed; what lay past `before` (the state's length) is hashed again."""
        hash_new_parts(self.parts, out, before, length, self.part_size, self._first_ahead())

    def remove(self) -> None:
        for path in (self.path, self.cues, self.info, self.tracks, self.parts, self.poster):
            path.unlink(missing_ok=True)

    def _keep_tracks(self, source: BinaryIO, parsed: _Window, renumber: dict[int, int]) -> None:
        """Keep this window's Tracks (a stream may have joined), numbered as the output numbers them; replaced in
        one rename, so a crash leaves the old or the new, each valid for what the state counts."""
        entries = []
        for entry in ebml.children(source, parsed.tracks.data_start, parsed.tracks.end):
            if entry.id != ebml.TRACK_ENTRY:
                continue
            fields = []
            for field in ebml.children(source, entry.data_start, entry.end):
                source.seek(field.start)
                raw = source.read(field.end - field.start)
                if field.id == ebml.TRACK_NUMBER:
                    number = ebml.read_uint(raw[field.data_start - field.start:])
                    raw = ebml.uint_element(ebml.TRACK_NUMBER, renumber.get(number, number))
                fields.append(raw)
            entries.append(ebml.element(ebml.TRACK_ENTRY, b"".join(fields)))
        staged = self.tracks.with_name(self.tracks.name + ".new")
        staged.write_bytes(ebml.element(ebml.TRACKS, b"".join(entries)))
        staged.replace(self.tracks)

    def _begin(self, source: BinaryIO, parsed: _Window) -> None:
        """The first window: reserve the header's space and keep Tracks and Info (without Duration) aside."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as out:
            out.truncate(RESERVED_BYTES)
        source.seek(parsed.tracks.start)
        self.tracks.write_bytes(source.read(parsed.tracks.end - parsed.tracks.start))
        kept = b""
        for child in ebml.children(source, parsed.info.data_start, parsed.info.end):
            if child.id != ebml.DURATION:
                source.seek(child.start)
                kept += source.read(child.end - child.start)
        self.info.write_bytes(kept)
        self.cues.write_bytes(b"")


def _parse(source: BinaryIO) -> _Window:
    head = ebml.read_header(source, 0)
    segment = ebml.read_header(source, head.end) if head else None
    if head is None or head.id != ebml.EBML or segment is None or segment.id != ebml.SEGMENT:
        raise Unsupported("the window file is not Matroska")
    info = tracks = None
    clusters, points = [], []
    for element in ebml.children(source, segment.data_start, segment.end):
        if element.id == ebml.INFO:
            info = element
        elif element.id == ebml.TRACKS:
            tracks = element
        elif element.id == ebml.CLUSTER:
            clusters.append(element)
        elif element.id == ebml.CUES:
            points = [p for p in ebml.children(source, element.data_start, element.end) if p.id == ebml.CUE_POINT]
    if info is None or tracks is None:
        raise Unsupported("the window file has no Info or Tracks")
    return _Window(segment.data_start, info, tracks, clusters, points)


def _values(source: BinaryIO, parent: ebml.Element):
    for child in ebml.children(source, parent.data_start, parent.end):
        source.seek(child.data_start)
        yield child.id, source.read(child.size)


def _renumbered_cluster(source: BinaryIO, cluster: ebml.Element, renumber: dict[int, int]) -> bytes:
    """A Cluster's bytes with each block's track number (a one-byte vint, tracks 1-126) mapped to the output's."""
    source.seek(cluster.start)
    data = bytearray(source.read(cluster.end - cluster.start))
    view = io.BytesIO(data)
    base = cluster.data_start - cluster.start
    for child in ebml.children(view, base, len(data)):
        block = child
        if child.id == ebml.BLOCK_GROUP:
            block = next((c for c in ebml.children(view, child.data_start, child.end) if c.id == ebml.BLOCK), child)
        if block.id not in (ebml.SIMPLE_BLOCK, ebml.BLOCK):
            continue
        number = data[block.data_start]
        if not number & 0x80 or renumber.get(number & 0x7F, number & 0x7F) > 126:
            raise Unsupported("a block's track number is not one byte")
        data[block.data_start] = 0x80 | renumber.get(number & 0x7F, number & 0x7F)
    return bytes(data)


def _moved_cue_point(source: BinaryIO, point: ebml.Element, moved: dict[int, int],
                     renumber: dict[int, int] | None = None) -> bytes:
    """The cue point re-encoded with its Cluster's position (and its track's number) in the output."""
    parts = []
    for child in ebml.children(source, point.data_start, point.end):
        if child.id != ebml.CUE_TRACK_POSITIONS:
            source.seek(child.start)
            parts.append(source.read(child.end - child.start))
            continue
        inner = []
        for field in ebml.children(source, child.data_start, child.end):
            source.seek(field.data_start)
            value = source.read(field.size)
            if field.id == ebml.CUE_CLUSTER_POSITION:
                position = moved.get(ebml.read_uint(value))
                if position is None:
                    raise Unsupported("a cue point names no Cluster of its window")
                inner.append(ebml.uint_element(field.id, position))
            elif field.id == ebml.CUE_TRACK and renumber:
                number = ebml.read_uint(value)
                inner.append(ebml.uint_element(field.id, renumber.get(number, number)))
            else:
                inner.append(ebml.element(field.id, value))
        parts.append(ebml.element(ebml.CUE_TRACK_POSITIONS, b"".join(inner)))
    return ebml.element(ebml.CUE_POINT, b"".join(parts))


def _seek_head(positions: dict[int, int]) -> bytes:
    """SeekHead with fixed-width positions, so its length is known before the positions are."""
    seeks = b"".join(
        ebml.element(ebml.SEEK, ebml.element(ebml.SEEK_ID, ebml.encode_id(ident))
                     + ebml.element(ebml.SEEK_POSITION, position.to_bytes(ebml.SIZE_WIDTH, "big")))
        for ident, position in positions.items()
    )
    return ebml.element(ebml.SEEK_HEAD, seeks)


def _copy(source: BinaryIO, start: int, end: int, out: BinaryIO) -> None:
    source.seek(start)
    left = end - start
    while left > 0:
        block = source.read(min(1024 * 1024, left))
        if not block:
            raise Unsupported("the window file ended early")
        out.write(block)
        left -= len(block)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


class _Joined(io.RawIOBase):
    """Pieces read as one seekable stream: bytes in memory, or (path, start, end) ranges of a file."""

    def __init__(self, pieces: list) -> None:
        super().__init__()
        self._pieces, self._starts, at = [], [], 0
        for piece in pieces:
            size = len(piece) if isinstance(piece, bytes) else piece[2] - piece[1]
            self._pieces.append(piece)
            self._starts.append(at)
            at += size
        self._size, self._at, self._files = at, 0, {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._at = max(0, offset if whence == io.SEEK_SET else self._at + offset if whence == io.SEEK_CUR
                       else self._size + offset)
        return self._at

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._at < self._size:
            index = bisect.bisect_right(self._starts, self._at) - 1
            piece, inside = self._pieces[index], self._at - self._starts[index]
            if isinstance(piece, bytes):
                data = piece[inside:inside + len(view) - done]
            else:
                path, start, end = piece
                handle = self._files.get(path) or self._files.setdefault(path, open(path, "rb"))
                handle.seek(start + inside)
                data = handle.read(min(len(view) - done, end - start - inside))
                if not data:
                    raise Unsupported("the live output is shorter than the state says")
            view[done:done + len(data)] = data
            done += len(data)
            self._at += len(data)
        return done

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        super().close()

"""The input side of a live step: where a stream's complete Clusters (or MP4 fragments) lie in its chunk bytes,
and a small file made of the stream's header and the next run of them, which PyAV demuxes like any recording.

A browser writes live WebM: a header, then Clusters of unknown size, cut into chunks anywhere. A window must
start at a Cluster (the demuxer cannot start inside one) and, while recording, end before the last Cluster
seen (it may still grow), so the scan walks element headers only, never the media.

Safari writes fragmented MP4: an init segment (ftyp, moov), then moof+mdat fragments. Every box states its size,
so a fragment is complete as soon as its mdat's last byte is there: a window ends at the last complete fragment
and holds nothing back. Each fragment's samples carry absolute times (tfdt), so the init segment followed by any
run of whole fragments demuxes to the same packets as the whole stream (`FRAGMENTED`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.media import ebml_io as ebml
from workers.media.container import Container, sniff
from workers.media.fmp4 import MAX_MOOF_BYTES, SKIPPABLE

COPY_BLOCK = 1024 * 1024
"""Window bytes are copied in pieces this size: a window never sits in memory whole."""

MAX_HEADER_BYTES = 1024 * 1024
"""A stream whose header (everything before its first Cluster) is larger is left to the batch path."""


class Unsupported(Exception):
    """Raised when a stream's bytes are not what the live path handles; finalize then takes the batch path."""


class NotYet(Exception):
    """Raised when a step has too little new media to fold in; the next step tries again."""


class ShortWindow(NotYet):
    """Raised when the first window ends before the timeline start's look-ahead: read on, past the step's cap."""


@dataclass(frozen=True)
class Scan:
    clusters: list[int]
    """Offsets (in the scanned byte stream) where each Cluster met begins."""
    times: list[float]
    """Each of those Clusters' timestamp in seconds (its first block's time, in a browser's WebM); none for MP4
    fragments, whose windows end at a fragment, not at a time (a single stream's)."""
    end: int
    """Where the last complete top-level element ended (the data may go on, cut short)."""


def header_length(stream: BinaryIO) -> int:
    """Bytes before the first Cluster: EBML header, Segment header, Info, Tracks (what every window repeats)."""
    head = ebml.read_header(stream, 0)
    if head is None or head.id != ebml.EBML or head.size == ebml.UNKNOWN_SIZE:
        raise Unsupported("the stream does not start with an EBML header")
    segment = ebml.read_header(stream, head.end)
    if segment is None or segment.id != ebml.SEGMENT:
        raise Unsupported("the stream has no Segment")
    offset = segment.data_start
    while True:
        element = ebml.read_header(stream, offset)
        if element is None:
            raise NotYet("no Cluster yet")
        if element.id == ebml.CLUSTER:
            return offset
        if element.size == ebml.UNKNOWN_SIZE or element.end > MAX_HEADER_BYTES:
            raise Unsupported("the stream's header is not what a browser writes")
        offset = element.end


def scan_clusters(stream: BinaryIO, start: int, limit: int) -> Scan:
    """Walk top-level elements from `start` (a Cluster) up to `limit` bytes, descending only into unknown-size
    Clusters, whose end is the next top-level id."""
    clusters: list[int] = []
    times: list[float] = []
    offset, complete = start, start
    while offset < limit:
        element = ebml.read_header(stream, offset)
        if element is None:
            break
        if element.id not in ebml.LEVEL1:
            raise Unsupported(f"unexpected element {element.id:#x} at offset {offset}")
        if element.id == ebml.CLUSTER:
            clusters.append(offset)
            times.append(_cluster_seconds(stream, element))
        if element.size != ebml.UNKNOWN_SIZE:
            offset = element.end
        elif element.id == ebml.CLUSTER:
            offset = _cluster_end(stream, element, limit)
            if offset is None:
                break
        else:
            raise Unsupported(f"element {element.id:#x} of unknown size")
        if offset <= limit:
            complete = offset
    return Scan(clusters=clusters, times=times, end=min(complete, limit))


def _cluster_seconds(stream: BinaryIO, cluster: ebml.Element) -> float:
    """A Cluster's Timestamp (its first child but a CRC-32 or Void, as muxers write it), in seconds at the 1 ms
    scale."""
    offset = cluster.data_start
    for _ in range(3):
        child = ebml.read_header(stream, offset)
        if child is None or child.size == ebml.UNKNOWN_SIZE:
            break
        if child.id == ebml.CLUSTER_TIMESTAMP and child.size <= 8:
            stream.seek(child.data_start)
            return ebml.read_uint(stream.read(child.size)) / 1000.0
        if child.id not in (ebml.CRC32, ebml.VOID):
            break
        offset = child.end
    raise Unsupported(f"the Cluster at offset {cluster.start} does not begin with its Timestamp")


def _cluster_end(stream: BinaryIO, cluster: ebml.Element, limit: int) -> int | None:
    """Where an unknown-size Cluster ends (the next top-level id), None when the data stops first."""
    offset = cluster.data_start
    while offset < limit:
        child = ebml.read_header(stream, offset)
        if child is None:
            return None
        if child.id in ebml.LEVEL1 or child.id == ebml.EBML:
            return offset
        if child.size == ebml.UNKNOWN_SIZE:
            raise Unsupported("a Cluster child of unknown size")
        offset = child.end
    return offset if offset == limit else None


def write_window(head: BinaryIO, header_len: int, body: BinaryIO, start: int, end: int, target: Path) -> int:
    """The stream's header (its Segment made unknown-size, so the demuxer reads on) followed by the body's
    bytes [start, end): a WebM file of just this window's Clusters. Returns where the body begins in it."""
    ebml_head = ebml.read_header(head, 0)
    segment = ebml.read_header(head, ebml_head.end)  # type: ignore[union-attr]
    with open(target, "wb") as out:
        _copy(head, 0, ebml_head.end, out)  # type: ignore[union-attr]
        out.write(ebml.encode_id(ebml.SEGMENT) + b"\x01\xff\xff\xff\xff\xff\xff\xff")
        _copy(head, segment.data_start, header_len, out)  # type: ignore[union-attr]
        body_at = out.tell()
        _copy(body, start, end, out)
    return body_at


def _copy(stream: BinaryIO, start: int, end: int, out: BinaryIO) -> None:
    stream.seek(start)
    left = end - start
    while left > 0:
        block = stream.read(min(COPY_BLOCK, left))
        if not block:
            raise Unsupported("a chunk file shrank while it was read")
        out.write(block)
        left -= len(block)


def init_length(stream: BinaryIO) -> int:
    """Fragmented MP4: bytes before the first moof (ftyp, moov and what lies between: what every window repeats)."""
    offset = 0
    while True:
        box = _mp4_box(stream, offset)
        if box is None:
            raise NotYet("no movie fragment yet")
        size, kind = box
        if (offset == 0) != (kind == b"ftyp") or kind == b"mdat" or offset + size > MAX_HEADER_BYTES:
            raise Unsupported("the stream's init segment is not what a browser writes")
        if kind == b"moof":
            return offset
        offset += size


def scan_fragments(stream: BinaryIO, start: int, limit: int) -> Scan:
    """Walk top-level boxes from `start` up to `limit` bytes: each moof begins a fragment, which is complete once
    its mdat ends; boxes the demuxer skips (styp, sidx, free, …) may lie between fragments."""
    fragments: list[int] = []
    offset, complete, open_moof = start, start, False
    while offset < limit:
        box = _mp4_box(stream, offset)
        if box is None:
            break
        size, kind = box
        if kind not in (b"moof", b"mdat") and kind not in SKIPPABLE:
            raise Unsupported(f"unexpected MP4 box {kind!r} at offset {offset}")
        if offset + size > limit:
            break
        if kind == b"moof":
            if not _times_its_samples(stream, offset, size):
                raise Unsupported(f"the fragment at offset {offset} has a track without its decode time (tfdt): "
                                  "its times would depend on every fragment before it")
            fragments.append(offset)
            open_moof = True
        offset += size
        if kind == b"mdat" and open_moof:
            complete, open_moof = offset, False
    return Scan(clusters=fragments, times=[], end=complete)


def _times_its_samples(stream: BinaryIO, offset: int, size: int) -> bool:
    """Whether every track fragment (traf) of the moof at `offset` states its first decode time (tfdt): a window
    that begins with it then demuxes to the same timestamps as the whole stream."""
    if size > MAX_MOOF_BYTES:
        return False
    stream.seek(offset)
    moof = stream.read(size)
    trafs = [(start, end) for kind, start, end in _children(moof, 8, len(moof)) if kind == b"traf"]
    return bool(trafs) and all(any(kind == b"tfdt" for kind, _, _ in _children(moof, start + 8, end))
                               for start, end in trafs)


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of the boxes that tile data[start:end]; stops at the first that does not fit."""
    found, pos = [], start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        if size < 8 or pos + size > end:
            break
        found.append((data[pos + 4:pos + 8], pos, pos + size))
        pos += size
    return found


def write_fragments(head: BinaryIO, header_len: int, body: BinaryIO, start: int, end: int, target: Path) -> int:
    """The stream's init segment followed by the body's bytes [start, end): a fragmented MP4 of just this window's
    fragments. Returns where the body begins in it."""
    with open(target, "wb") as out:
        _copy(head, 0, header_len, out)
        body_at = out.tell()
        _copy(body, start, end, out)
    return body_at


def _mp4_box(stream: BinaryIO, offset: int) -> tuple[int, bytes] | None:
    """(size, type) of the box at `offset`; None when its header is not all there yet."""
    stream.seek(offset)
    header = stream.read(16)
    if len(header) < 8:
        return None
    size, kind = int.from_bytes(header[:4], "big"), header[4:8]
    if size == 1:
        if len(header) < 16:
            return None
        size = int.from_bytes(header[8:16], "big")
    if size < 8 or not kind.isascii() or not kind.strip(b" ").isalnum():
        raise Unsupported(f"no MP4 box at offset {offset} (a box to the end of the file, or corrupt data)")
    return size, kind


@dataclass(frozen=True)
class Layout:
    """How a stream's container is cut into windows."""

    header_length: Callable[[BinaryIO], int]
    scan: Callable[[BinaryIO, int, int], Scan]
    write: Callable[[BinaryIO, int, BinaryIO, int, int, Path], int]
    holds_back_last: bool
    """WebM: the last Cluster seen may still grow, so a window ends before it. MP4 boxes state their size."""


MATROSKA = Layout(header_length, scan_clusters, write_window, holds_back_last=True)
FRAGMENTED = Layout(init_length, scan_fragments, write_fragments, holds_back_last=False)


def layout_of(head: BinaryIO) -> Layout:
    """The layout of the stream whose run begins `head` (its header chunk's first bytes say which)."""
    head.seek(0)
    return FRAGMENTED if sniff(head.read(16)) is Container.MP4 else MATROSKA

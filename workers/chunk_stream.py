"""A stream's chunk files read in order as one seekable byte stream, so the demuxer never needs the
whole recording in memory; split at each recorder restart (a new header) and demuxed segment by
segment onto one continuous timeline."""
from __future__ import annotations

import bisect
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from workers.container import EBML_MAGIC
from workers.errors import MediaError

log = logging.getLogger(__name__)

READ_BUFFER_BYTES = 256 * 1024
"""PyAV reads a file-like object in pieces of this size; larger pieces mean fewer Python calls."""

LEAP_SECONDS = 1.0
"""A packet this far ahead of its track's previous one is held until the next packet confirms the leap."""

MAX_DEMUX_FAILURES = 8
"""Consecutive demux errors after which the rest of a segment is given up as unreadable."""

Chunk = tuple[int, Path]
"""(sequence, path) of one chunk file present on disk."""


class ChunkStream(io.RawIOBase):
    """Read-only view of several files as their concatenation; only one file is open at a time."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._paths = [Path(path) for path in paths]
        self._starts: list[int] = []
        total = 0
        for path in self._paths:
            self._starts.append(total)
            total += os.stat(path).st_size
        self._size = total
        self._pos = 0
        self._index = -1
        self._handle: BinaryIO | None = None

    @property
    def size(self) -> int:
        """Total bytes of every file, known up front so progress can be a fraction."""
        return self._size

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

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed ChunkStream")


@dataclass(frozen=True)
class SegmentPlan:
    """A stream's chunks grouped by recorder: each segment starts with its own container header."""

    segments: list[list[Chunk]]
    dropped: list[int]
    """Sequences before the first header chunk: without a header they cannot be demuxed."""


def starts_with_header(path: Path) -> bool:
    """True when a chunk file begins with the EBML magic, i.e. a recorder (re)started there."""
    with open(path, "rb") as handle:
        return handle.read(len(EBML_MAGIC)) == EBML_MAGIC


def split_segments(chunks: Sequence[Chunk]) -> SegmentPlan:
    """Split a sequence-sorted chunk list at every header chunk (a client restarted its recorder)."""
    segments: list[list[Chunk]] = []
    dropped: list[int] = []
    for sequence, path in chunks:
        if starts_with_header(path):
            segments.append([(sequence, path)])
        elif segments:
            segments[-1].append((sequence, path))
        else:
            dropped.append(sequence)
    return SegmentPlan(segments=segments, dropped=dropped)


def describe_av_error(exc: Exception) -> str:
    """FFmpeg's own reason without the file name PyAV appends (it names a temp path or a Python object)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return type(exc).__name__


@dataclass(eq=False)
class Track:
    """One audio or video track of a stream; the muxer fills `output` and counts what it writes."""

    source: str
    """The client's stream type ("video" or "audio") the track came from."""
    position: int
    kind: str
    codec: str
    key: tuple[str, str, int]
    template: av.stream.Stream | None
    """Only valid while the first segment is open: PyAV segfaults on a stream of a closed container."""
    width: int | None = None
    height: int | None = None
    output: av.stream.Stream | None = None
    packets: int = 0
    last_dts: float = float("-inf")

    @classmethod
    def of(cls, source: str, position: int, stream: av.stream.Stream, key: tuple[str, str, int]) -> Track:
        """Copy what the result needs out of the stream now, while its container is open."""
        video = stream.type == "video"
        context = stream.codec_context
        return cls(
            source=source,
            position=position,
            kind=stream.type,
            codec=context.name,
            key=key,
            template=stream,
            width=context.width if video else None,
            height=context.height if video else None,
        )


class ChunkDemuxer:
    """Packets of one stream across its segments, each later segment shifted to start where the last ended."""

    def __init__(self, kind: str, chunks: Sequence[Chunk]) -> None:
        self.kind = kind
        plan = split_segments(chunks)
        if not plan.segments:
            raise MediaError(_missing_header(kind, chunks))
        self.dropped = list(plan.dropped)
        self.tracks: list[Track] = []
        self.segment_count = 0
        self.spikes = 0
        """Packets dropped because their timestamp leapt ahead alone (a corrupt timecode)."""
        self._pending = list(plan.segments)
        self.total_bytes = sum(os.stat(path).st_size for segment in plan.segments for _, path in segment)
        self._done_bytes = 0
        self._container: av.container.InputContainer | None = None
        self._stream: ChunkStream | None = None

    @property
    def consumed_bytes(self) -> int:
        """Bytes the demuxer has read so far, for progress."""
        current = self._stream.tell() if self._stream is not None and not self._stream.closed else 0
        return self._done_bytes + current

    def open_first(self) -> None:
        """Open the first readable segment now: its tracks decide the output's tracks."""
        reason = "no segment opened"
        while self._pending and self._container is None:
            reason = self._open_next() or reason
        if self._container is None:
            raise MediaError(f"the {self.kind} stream cannot be read: {reason}")
        counts: dict[tuple[str, str], int] = {}
        for position, stream in enumerate(_media_streams(self._container)):
            self.tracks.append(Track.of(self.kind, position, stream, _track_key(stream, counts)))

    def packets(self) -> Iterator[tuple[float, Track, av.Packet]]:
        """(dts in seconds, track, packet) in demux order, on one timeline across segments."""
        end = 0.0
        first = True
        while self._container is not None:
            offset = 0.0 if first else end - _start_seconds(self._container)
            end = yield from self._segment_packets(self._container, offset, end)
            first = False
            self._close_current()
            while self._pending and self._container is None:
                self._open_next()

    def close(self) -> None:
        self._close_current()

    def _segment_packets(
        self, container: av.container.InputContainer, offset: float, end: float
    ) -> Iterator[tuple[float, Track, av.Packet]]:
        """Yield one segment's packets shifted by `offset`; return where its media ends."""
        lanes = self._lanes(container, offset)
        for packet in _demux(container, self.kind):
            lane = lanes.get(packet.stream_index)
            if lane is None or packet.size == 0:
                continue
            pts, dts = packet.pts, packet.dts
            if dts is None:
                if pts is None:
                    continue
                dts = pts  # browser WebM leaves dts unset on some packets (PyAV #1917)
            elif pts is None:
                pts = dts
            pts, dts = pts + lane.shift, dts + lane.shift
            packet.pts, packet.dts = pts, dts
            seconds, last = dts * lane.seconds_per_tick, lane.last_seconds
            if lane.held is None and last is not None and seconds - last <= LEAP_SECONDS:
                yield lane.take(seconds, packet), lane.track, packet  # the common case, kept cheap
                continue
            for seconds, ready in lane.admit(seconds, packet):
                yield seconds, lane.track, ready
        for lane in lanes.values():
            self.spikes += lane.finish()
        return max([end, *(lane.end() for lane in lanes.values())])

    def _lanes(self, container: av.container.InputContainer, offset: float) -> dict[int, _Lane]:
        """Map this segment's stream indexes onto the first segment's tracks (same kind, codec, rank)."""
        by_key = {track.key: track for track in self.tracks}
        counts: dict[tuple[str, str], int] = {}
        lanes = {}
        for stream in _media_streams(container):
            track = by_key.get(_track_key(stream, counts))
            if track is None:
                log.warning("%s stream: a restarted recorder added a %s track; it is left out", self.kind, stream.type)
                continue
            lanes[stream.index] = _Lane(track, stream.time_base, offset)
        return lanes

    def _open_next(self) -> str | None:
        """Open the next pending segment; on failure drop its chunks and return why."""
        segment = self._pending.pop(0)
        stream = ChunkStream([path for _, path in segment])
        try:
            container = av.open(stream, format="matroska", buffer_size=READ_BUFFER_BYTES)
        except (av.FFmpegError, ValueError) as exc:
            stream.close()
            self._done_bytes += stream.size
            self.dropped.extend(sequence for sequence, _ in segment)
            return f"segment at sequence {segment[0][0]}: {describe_av_error(exc)}"
        if not _media_streams(container):
            container.close()
            self._done_bytes += stream.size
            self.dropped.extend(sequence for sequence, _ in segment)
            return f"segment at sequence {segment[0][0]} has no audio or video track"
        self._container, self._stream = container, stream
        self.segment_count += 1
        return None

    def _close_current(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._stream is not None:
            self._done_bytes += self._stream.size
            self._stream.close()
            self._stream = None


class _Lane:
    """Per input stream of one segment: its track, its time shift, where its media ends so far, and a
    packet held back when its timestamp leaps ahead (a corrupt block timecode would otherwise push every
    later packet "backwards" and get it dropped)."""

    __slots__ = ("track", "shift", "seconds_per_tick", "last_seconds", "last_pts", "gap", "held", "spikes")

    def __init__(self, track: Track, time_base: Fraction, offset: float) -> None:
        self.track = track
        self.shift = round(offset / time_base)
        self.seconds_per_tick = float(time_base)
        self.last_seconds: float | None = None
        self.last_pts: int | None = None
        self.gap = 0
        self.held: tuple[float, av.Packet] | None = None
        self.spikes = 0

    def admit(self, seconds: float, packet: av.Packet) -> list[tuple[float, av.Packet]]:
        """Packets ready to mux: a leap is held until the next packet confirms it (a hole) or not (a spike)."""
        ready = []
        if self.held is not None:
            held_seconds, held_packet = self.held
            self.held = None
            if seconds >= held_seconds - LEAP_SECONDS:
                ready.append((self.take(held_seconds, held_packet), held_packet))
            else:
                self.spikes += 1
        if self.last_seconds is not None and seconds - self.last_seconds > LEAP_SECONDS:
            self.held = (seconds, packet)
        else:
            ready.append((self.take(seconds, packet), packet))
        return ready

    def finish(self) -> int:
        """Spikes dropped; a leap in the very last packet cannot be confirmed, so it is dropped too."""
        if self.held is not None:
            self.held = None
            self.spikes += 1
        return self.spikes

    def end(self) -> float:
        """Last pts plus its duration; browsers often leave duration 0, so then the last frame gap."""
        if self.last_pts is None:
            return 0.0
        return (self.last_pts + max(0, self.gap)) * self.seconds_per_tick

    def take(self, seconds: float, packet: av.Packet) -> float:
        """Record a packet as passed on (for `end`); returns its time."""
        pts = packet.pts
        self.gap = packet.duration or (pts - self.last_pts if self.last_pts is not None else 0)
        self.last_seconds, self.last_pts = seconds, pts
        return seconds


def _demux(container: av.container.InputContainer, kind: str) -> Iterator[av.Packet]:
    """Demux to the end, resuming after corrupt data: one bad chunk must cost only its own media."""
    failures = 0
    while failures < MAX_DEMUX_FAILURES:
        try:
            for packet in container.demux():
                failures = 0
                yield packet
            return
        except av.EOFError:
            return
        except av.FFmpegError as exc:
            failures += 1
            log.warning("%s stream: skipping unreadable data (%s)", kind, describe_av_error(exc))
    log.warning("%s stream: giving up on the rest of a segment after %d errors", kind, failures)


def _media_streams(container: av.container.InputContainer) -> list[av.stream.Stream]:
    return [stream for stream in container.streams if stream.type in ("audio", "video")]


def _track_key(stream: av.stream.Stream, counts: dict[tuple[str, str], int]) -> tuple[str, str, int]:
    """(kind, codec, how many such tracks came before): how a restarted recorder's tracks are matched."""
    base = (stream.type, stream.codec_context.name)
    counts[base] = counts.get(base, 0) + 1
    return (*base, counts[base])


def _start_seconds(container: av.container.InputContainer) -> float:
    """Where a segment's media begins; a restarted recorder starts again near zero."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _missing_header(kind: str, chunks: Sequence[Chunk]) -> str:
    sequences = [sequence for sequence, _ in chunks]
    if not sequences:
        return f"header chunk (sequence 0) is missing for {kind} stream; the stream has no chunks"
    if sequences[0] == 0:
        return f"header chunk (sequence 0) of the {kind} stream does not start with a WebM/Matroska header"
    return (
        f"header chunk (sequence 0) is missing for {kind} stream; chunks {sequences[0]}-{sequences[-1]} "
        "cannot be read without it"
    )

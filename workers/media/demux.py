"""A client stream's packets across its segments (one per recorder run), each read with the demuxer its
header names, on one continuous timeline: every later segment starts where the one before ended."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import av

from workers.media.bridge import KeyframeBridge
from workers.media.chunk_stream import Chunk, ChunkStream, split_segments
from workers.media.container import Container
from workers.media.cuts import CutFilter, StreamCuts
from workers.media.errors import MediaError
from workers.media.fmp4 import FragmentView, FragmentWalker
from workers.media.track import Track, codec_name
from workers.media.timeline import LEAP_SECONDS, Lane, SegmentClock, Spans

log = logging.getLogger(__name__)

READ_BUFFER_BYTES = 256 * 1024
"""PyAV reads a file-like object in pieces of this size; larger pieces mean fewer Python calls."""

MAX_DEMUX_FAILURES = 8
"""Consecutive demux errors after which the rest of a segment is given up as unreadable."""


def describe_av_error(exc: Exception) -> str:
    """FFmpeg's own reason without the file name PyAV appends (it names a temp path or a Python object)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return type(exc).__name__


class ChunkDemuxer:
    """Packets of one stream across its segments, each later segment shifted to start where the last ended."""

    def __init__(self, stream_type: str, chunks: Sequence[Chunk], cuts: StreamCuts | None = None) -> None:
        self.stream_type = stream_type
        self._pause_cuts = cuts
        self._filter: CutFilter | None = None
        plan = split_segments(chunks)
        if not plan.segments:
            raise MediaError(_missing_header(stream_type, chunks))
        self.dropped = list(plan.dropped)
        self.tracks: list[Track] = []
        self.segment_count = 0
        self.spikes = 0
        self.left_out = 0
        """Packets of a restarted recorder's tracks that match none of the output's (another codec): counted, so
        the loss shows in droppedPackets instead of vanishing."""
        """Packets dropped because their timestamp leapt ahead alone (a corrupt timecode)."""
        self.repairs = 0
        """Pauses collapsed and restarts joined inside segments (see workers/media/timeline.py)."""
        self.cuts = 0
        """Places in fMP4 segments where a hole or corrupt data cost whole fragments."""
        self.paused_packets = 0
        """Packets left out as media recorded inside a pause (workers/media/cuts.py)."""
        self.paused_seconds = 0.0
        """Seconds of paused media cut out of the stream's timeline."""
        self.first_offset = 0.0
        """Seconds the first segment is moved by: 0 for a whole stream; a live window of a restarted recorder's run
        (workers/live/window.py) starts where the run before it ended, as batch's next segment does."""
        self.lane_ends: dict[tuple[str, str, int], float | None] = {}
        """Each track's end (Lane.end) in the last segment read, None when one packet with no duration left it
        unsure (the gap to the packet before it decides it): where a live window tells the next run to start."""
        self.clock_seed: dict | None = None
        """A live window's run clock (SegmentClock.snapshot) to take up in the first segment, so a run's repairs
        (workers/media/timeline.py) go on from the window before; `clock_moved` turns this file's byte positions
        into the run's."""
        self.clock_moved = 0
        self.clock_state: dict | None = None
        """The last segment's clock at its end (SegmentClock.snapshot, positions moved by `clock_moved`)."""
        self._pending = list(zip(plan.segments, plan.containers))
        self.total_bytes = sum(os.stat(path).st_size for segment in plan.segments for _, path in segment)
        self._done_bytes = 0
        self._container: av.container.InputContainer | None = None
        self._reader: ChunkStream | FragmentView | None = None
        self._reader_bytes = 0

    @property
    def consumed_bytes(self) -> int:
        """Bytes the demuxer has read so far, for progress."""
        current = self._reader.tell() if self._reader is not None and not self._reader.closed else 0
        return self._done_bytes + min(current, self._reader_bytes)

    def open_first(self) -> None:
        """Open the first readable segment now: its tracks decide the output's tracks."""
        reason = "no segment opened"
        while self._pending and self._container is None:
            reason = self._open_next() or reason
        if self._container is None:
            raise MediaError(f"the {self.stream_type} stream cannot be read: {reason}")
        counts: dict[tuple[str, str], int] = {}
        for position, stream in enumerate(_media_streams(self._container)):
            self.tracks.append(Track.of(self.stream_type, position, stream, _track_key(stream, counts)))

    def packets(self) -> Iterator[tuple[float, Track, av.Packet]]:
        """(dts in seconds, track, packet) in demux order, on one timeline across segments."""
        end = 0.0
        first = True
        while self._container is not None:
            offset = self.first_offset if first else end - _start_seconds(self._container)
            end = yield from self._segment_packets(self._container, self._reader, offset, end)  # type: ignore[arg-type]
            first = False
            self._close_current()
            while self._pending and self._container is None:
                self._open_next()

    def close(self) -> None:
        self._close_current()

    def start_seconds(self) -> float:
        """Where the open segment's media begins (after open_first): what a later segment is moved back by."""
        if self._container is None:
            raise MediaError(f"the {self.stream_type} stream has no open segment")
        return _start_seconds(self._container)

    def _segment_packets(
        self, container: av.container.InputContainer, spans: Spans, offset: float, end: float
    ) -> Iterator[tuple[float, Track, av.Packet]]:
        """Yield one segment's packets shifted by `offset`; return where its media ends."""
        clock = SegmentClock(spans)
        lanes = self._lanes(container, clock, offset)
        keyed = {"/".join(map(str, lane.track.key)): lane for lane in lanes.values()}
        if self.clock_seed and self.segment_count == 1:
            clock.restore(self.clock_seed, keyed, -self.clock_moved)
        cuts = self._filter
        bridges = _bridges(container, lanes) if cuts is not None else {}
        for packet in _demux(container, self.stream_type):
            lane = lanes.get(packet.stream_index)
            if lane is None or packet.size == 0:
                self.left_out += lane is None and packet.size > 0
                continue
            pts, dts = packet.pts, packet.dts
            if dts is None:
                if pts is None:
                    continue
                dts = pts  # browser WebM leaves dts unset on some packets (PyAV #1917)
            elif pts is None:
                pts = dts
            if cuts is not None:
                index, bridge = packet.stream_index, bridges.get(packet.stream_index)
                if bridge is not None:
                    bridge.remember(packet, pts, dts)
                shift = cuts.shift(index, float(dts * lane.time_base), bridge is not None, packet.is_keyframe)
                if shift is None:
                    continue
                ticks = round(shift / lane.time_base)
                if bridge is not None and cuts.waiting(index):
                    made = list(bridge.bridge())  # after a cut, before the client's next keyframe
                    for out in made:
                        yield from _place(lane, out.pts - ticks, out.dts - ticks, out)
                    if not made and not bridge.active:
                        cuts.dropped += 1  # not bridged: the picture holds until that keyframe
                    continue
                if bridge is not None and bridge.active:
                    for out in bridge.finish():
                        yield from _place(lane, out.pts - ticks, out.dts - ticks, out)
                pts, dts = pts - ticks, dts - ticks
            last = lane.last_seconds
            if lane.held is None and last is not None and (
                -LEAP_SECONDS <= (dts + lane.shift) * lane.seconds_per_tick - last <= LEAP_SECONDS
            ):
                yield lane.take(pts, dts, packet), lane.track, packet  # the common case, kept cheap (inline)
                continue
            for seconds, ready in lane.admit(pts, dts, packet):
                yield seconds, lane.track, ready
        self.lane_ends = {}
        for lane in lanes.values():
            self.spikes += lane.finish()
            if lane.last_pts is not None:
                sure = lane.gap or (lane.first_pos is not None and lane.first_pos != lane.last_pos)
                self.lane_ends[lane.track.key] = lane.end() if sure else None
        self.repairs += clock.repairs
        self.clock_state = clock.snapshot(keyed, self.clock_moved)
        if cuts is not None:
            self.paused_packets += cuts.dropped
            self.paused_seconds += cuts.removed_seconds
        return max([end, *(lane.end() for lane in lanes.values())])

    def _lanes(self, container: av.container.InputContainer, clock: SegmentClock, offset: float) -> dict[int, Lane]:
        """Map this segment's stream indexes onto the first segment's tracks (same media type, codec, rank)."""
        by_key = {track.key: track for track in self.tracks}
        counts: dict[tuple[str, str], int] = {}
        lanes = {}
        for stream in _media_streams(container):
            track = by_key.get(_track_key(stream, counts))
            if track is None:
                log.warning("%s stream: a restarted recorder added a %s track; it is left out", self.stream_type, stream.type)
                continue
            lanes[stream.index] = clock.lane(track, stream.time_base, offset)
        return lanes

    def _open_next(self) -> str | None:
        """Open the next pending segment; on failure drop its chunks and return why."""
        segment, container_type = self._pending.pop(0)
        stream = ChunkStream([path for _, path in segment], [sequence for sequence, _ in segment])
        where = f"segment at sequence {segment[0][0]}"
        try:
            reader, fmt = _reader(stream, container_type)
            container = av.open(reader, format=fmt, buffer_size=READ_BUFFER_BYTES)
        except MediaError as exc:
            return self._drop(segment, stream, f"{where}: {exc.message}")
        except (av.FFmpegError, ValueError) as exc:
            return self._drop(segment, stream, f"{where}: {describe_av_error(exc)}")
        if not _media_streams(container):
            container.close()
            return self._drop(segment, stream, f"{where} has no audio or video track")
        if self.tracks and not self._shares_a_track(container):
            codecs = ", ".join(codec_name(s) for s in _media_streams(container))
            container.close()
            log.warning("%s stream: %s restarted with other codecs (%s); its chunks are reported missing",
                        self.stream_type, where, codecs)
            return self._drop(segment, stream, f"{where} holds none of the output's codecs ({codecs})")
        if isinstance(reader, FragmentView):
            self.cuts += reader.plan.cuts
        self._container, self._reader, self._reader_bytes = container, reader, stream.size
        self._filter = (self._pause_cuts.for_segment([sequence for sequence, _ in segment], _start_seconds(container))
                        if self._pause_cuts is not None else None)
        self.segment_count += 1
        return None

    def _shares_a_track(self, container: av.container.InputContainer) -> bool:
        """Whether a later segment has a track the output holds (same media type, codec, rank)."""
        keys, counts = {track.key for track in self.tracks}, {}
        return any(_track_key(stream, counts) in keys for stream in _media_streams(container))

    def _drop(self, segment: list[Chunk], stream: ChunkStream, reason: str) -> str:
        stream.close()
        self._done_bytes += stream.size
        self.dropped.extend(sequence for sequence, _ in segment)
        return reason

    def _close_current(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._reader is not None:
            self._done_bytes += self._reader_bytes
            self._reader.close()
            self._reader = None


def _place(lane: Lane, pts: int, dts: int, packet: av.Packet) -> Iterator[tuple[float, Track, av.Packet]]:
    """A packet onto its lane's timeline: straight through when it follows on, else held until confirmed."""
    last = lane.last_seconds
    if lane.held is None and last is not None and (
        -LEAP_SECONDS <= (dts + lane.shift) * lane.seconds_per_tick - last <= LEAP_SECONDS
    ):
        yield lane.take(pts, dts, packet), lane.track, packet  # the common case, kept cheap
        return
    for seconds, ready in lane.admit(pts, dts, packet):
        yield seconds, lane.track, ready


def _bridges(container: av.container.InputContainer, lanes: dict[int, Lane]) -> dict[int, KeyframeBridge]:
    """A keyframe bridge per video lane of a segment that has cuts."""
    out = {}
    for stream in _media_streams(container):
        if stream.type == "video" and stream.index in lanes:
            context = stream.codec_context
            out[stream.index] = KeyframeBridge(codec_name(stream), stream.time_base, context.width, context.height)
    return out


def _reader(stream: ChunkStream, container: Container) -> tuple[ChunkStream | FragmentView, str]:
    """What the demuxer reads and with which format: fMP4 through the fragment walker, Matroska as it is."""
    if container is Container.MP4:
        return FragmentView(stream, FragmentWalker(stream).plan()), container.demuxer
    return stream, Container.MATROSKA.demuxer


def _demux(container: av.container.InputContainer, stream_type: str) -> Iterator[av.Packet]:
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
            log.warning("%s stream: skipping unreadable data (%s)", stream_type, describe_av_error(exc))
    log.warning("%s stream: giving up on the rest of a segment after %d errors", stream_type, failures)


def _media_streams(container: av.container.InputContainer) -> list[av.stream.Stream]:
    return [stream for stream in container.streams if stream.type in ("audio", "video")]


def _track_key(stream: av.stream.Stream, counts: dict[tuple[str, str], int]) -> tuple[str, str, int]:
    """(media type, codec, how many such tracks came before): how a restarted recorder's tracks are matched."""
    base = (stream.type, codec_name(stream))
    counts[base] = counts.get(base, 0) + 1
    return (*base, counts[base])


def _start_seconds(container: av.container.InputContainer) -> float:
    """Where a segment's media begins; a restarted recorder starts again near zero."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _missing_header(stream_type: str, chunks: Sequence[Chunk]) -> str:
    sequences = [sequence for sequence, _ in chunks]
    if not sequences:
        return f"header chunk (sequence 0) is missing for {stream_type} stream; the stream has no chunks"
    if sequences[0] == 0:
        return (f"header chunk (sequence 0) of the {stream_type} stream does not start with a WebM/Matroska header "
                "or an MP4 init segment (ftyp)")
    return (
        f"header chunk (sequence 0) is missing for {stream_type} stream; chunks {sequences[0]}-{sequences[-1]} "
        "cannot be read without it"
    )

"""One live window remuxed exactly as the batch muxer would have remuxed those packets in the whole file.

The batch muxer (workers/media/muxer.py) moves every packet back by the timeline start and lifts a late dts
to its track's last one; a window carries both across windows (LiveTracks), reuses the muxer's own
functions for them, and refuses (Unsupported) whatever would make its packets differ from batch: timestamp
repairs, spikes, a second segment, a track set that changed. Packets keep absolute timestamps, so each
window's Clusters can be appended to the output as they are.
"""
from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av

from workers.live.source import ShortWindow, Unsupported
from workers.media import muxer
from workers.media.demux import ChunkDemuxer, describe_av_error
from workers.media.errors import MediaError


@dataclass
class LiveTracks:
    """What carries from one window to the next, per output track in the batch muxer's order."""

    fmt: str = ""
    start: float | None = None
    """The output's timeline start (the batch muxer's _timeline_start), fixed by the first window."""
    keys: list[list] = field(default_factory=list)
    """Each track's (media type, codec, rank): a later window must find the same tracks in the same order."""
    last_dts: list[float] = field(default_factory=list)
    packets: list[int] = field(default_factory=list)
    dropped: int = 0

    def to_json(self) -> dict:
        return {"fmt": self.fmt, "start": self.start, "keys": self.keys, "lastDts": self.last_dts,
                "packets": self.packets, "dropped": self.dropped}

    @classmethod
    def from_json(cls, data: dict) -> LiveTracks:
        return cls(data["fmt"], data["start"], data["keys"], [float(x) for x in data["lastDts"]],
                   list(data["packets"]), data["dropped"])


@dataclass(frozen=True)
class WindowSource:
    """One stream's window file, and where its body (the Clusters after the header) begins in it."""

    stream_type: str
    sequence: int
    path: Path
    body_at: int


@dataclass
class _Feed:
    """One source's packets for this window: those before `skip` (a window file position) were folded by the
    last window; those at or after `until` wait for the next, which must begin at the Cluster holding the
    first of them (`deferred`, a window file position). Several sources are merged by time as batch merges
    them, which gives batch's order only when each source's timestamps never go back: else Unsupported."""

    skip: int
    until: float
    ordered: bool
    deferred: int | None = None
    last: float = -math.inf

    def packets(self, demuxer: ChunkDemuxer) -> Iterator:
        for item in demuxer.packets():
            seconds, _track, packet = item
            if self.ordered:
                if seconds < self.last:
                    raise Unsupported("a stream's timestamps go back: batch merges the streams over the whole file")
                self.last = seconds
            if packet.pos is not None and 0 <= packet.pos < self.skip:
                continue
            if seconds >= self.until:
                if packet.pos is None or packet.pos < 0:
                    raise Unsupported("a packet with no file position")
                self.deferred = packet.pos if self.deferred is None else min(self.deferred, packet.pos)
                continue
            yield item


def remux_window(sources: list[WindowSource], target: Path, carried: LiveTracks, final: bool, until: float,
                 skips: list[int]) -> tuple[list[muxer.TrackInfo], list[int | None]]:
    """Remux the window files' packets before `until` (and from each one's skip position on) into the seekable
    `target` (its Cues say where keyframes are), merged by time as the batch muxer merges the streams; updates
    `carried`. Returns the track facts and, per source, the window position of the first packet left for the
    next window (None: none). Raises Unsupported when its packets could differ from the batch path's."""
    demuxers: list[ChunkDemuxer] = []
    try:
        for source in sources:
            demuxers.append(ChunkDemuxer(source.stream_type, [(source.sequence, source.path)]))
            demuxers[-1].open_first()
        tracks = muxer._track_order(demuxers)  # noqa: SLF001 - the batch muxer's own order, on purpose
        keys = [list(track.key) for track in tracks]
        if carried.keys and keys != carried.keys:
            raise Unsupported("the window's tracks differ from the first window's")
        fmt = muxer.output_format_for(track.codec for track in tracks)
        carried.fmt, carried.keys = fmt, keys
        if not carried.last_dts:
            carried.last_dts, carried.packets = [-math.inf] * len(tracks), [0] * len(tracks)
        for track, last in zip(tracks, carried.last_dts):
            track.last_dts = last
        feeds = [_Feed(skip, until, len(demuxers) > 1) for skip in skips]
        try:
            with av.open(str(target), mode="w", format=fmt) as output:
                for track in tracks:
                    track.output = muxer._output_stream(output, track, fmt)  # noqa: SLF001
                    track.template = None
                streams = [feed.packets(demuxer) for feed, demuxer in zip(feeds, demuxers)]
                merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda item: item[0])
                _interleave(merged, output, carried, final)
        except av.FFmpegError as exc:
            raise MediaError(f"could not write a live window: {describe_av_error(exc)}") from exc
        for demuxer in demuxers:
            if demuxer.repairs or demuxer.spikes or demuxer.dropped or demuxer.segment_count != 1 or demuxer.cuts:
                raise Unsupported("the window needed timestamp repairs the batch path makes across the whole stream")
        carried.last_dts = [track.last_dts for track in tracks]
        carried.packets = [count + track.packets for count, track in zip(carried.packets, tracks)]
        return [muxer._info(track) for track in tracks], [feed.deferred for feed in feeds]  # noqa: SLF001
    finally:
        for demuxer in demuxers:
            demuxer.close()


def _interleave(merged: Iterator, output: av.container.OutputContainer, carried: LiveTracks, final: bool) -> None:
    """The batch muxer's _interleave, with the start and last dts carried across windows."""
    if carried.start is None:
        merged, start = _first_start(merged, final)
        carried.start = start
    else:
        start = carried.start
    for seconds, track, packet in merged:
        if not muxer.write_shifted(output, track, packet, seconds, start):
            carried.dropped += 1


def _first_start(feed, final: bool):
    """The batch muxer's start; the first window must reach past its look-ahead, or be the whole stream."""
    merged, start = muxer._timeline_start(feed)  # noqa: SLF001
    buffered = []
    for item in merged:
        buffered.append(item)
        if item[0] - buffered[0][0] > muxer.START_LOOKAHEAD_SECONDS:
            break
    else:
        if not final:
            raise ShortWindow("the first window is shorter than the timeline start's look-ahead")
    return itertools.chain(buffered, merged), start
